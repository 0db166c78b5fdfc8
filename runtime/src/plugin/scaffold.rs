//! `sluice plugin new NAME`: a new plugin crate from the SDK's template (`sdk/template`,
//! embedded in the binary), with the package name, the plugin type's name and the `sluice-sdk`
//! dependency filled in.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const TEMPLATE_CARGO: &str = include_str!("../../../sdk/template/Cargo.toml");
const TEMPLATE_LIB: &str = include_str!("../../../sdk/template/src/lib.rs");

/// The template's own names, replaced in the copy.
const TEMPLATE_PACKAGE: &str = "name = \"drop-noise\"";
const TEMPLATE_TYPE: &str = "DropNoise";
const TEMPLATE_WASM: &str = "drop_noise.wasm";
const TEMPLATE_SDK: &str = "sluice-sdk = { path = \"..\" }";
const TEMPLATE_HEADER: &str =
    "# A sluice plugin. Copy this directory, rename the package, write src/lib.rs, then:";
const TEMPLATE_SDK_COMMENT: &str = "# A path into the sluice repository, for building the template where it is. In your own copy,\n\
     # point at the SDK you build against instead, e.g.";

/// Where the SDK was when this sluice was built, if it is still there.
pub fn built_sdk_path() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).ok()?;
    if !manifest.contains("name = \"sluice-sdk\"") {
        return None;
    }
    sdk.canonicalize().ok()
}

/// The SDK path written when none is known: wrong on purpose, explained in the next steps.
pub const PLACEHOLDER_SDK: &str = "../sluice/sdk";

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub dir: PathBuf,
    pub package: String,
    /// The plugin's type in `src/lib.rs`.
    pub type_name: String,
    /// The `.wasm` that `cargo build --release --target wasm32-wasip2` makes.
    pub wasm: String,
    /// The `sluice-sdk` path in `Cargo.toml`.
    pub sdk: String,
    /// Whether `sdk` is a real SDK directory.
    pub sdk_found: bool,
}

/// Writes the crate `name` into `parent/name`; refuses an existing path.
pub fn create(name: &str, parent: &Path, sdk: Option<&Path>) -> Result<Created, String> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() || dir.symlink_metadata().is_ok() {
        return Err(format!("{} already exists; choose another name or --dir", dir.display()));
    }
    let (sdk, sdk_found) = match sdk {
        // A relative path is relative to the new crate, as Cargo reads it.
        Some(path) => (path.to_path_buf(), dir.join(path).join("Cargo.toml").is_file()),
        None => match built_sdk_path() {
            Some(path) => (path, true),
            None => (PathBuf::from(PLACEHOLDER_SDK), false),
        },
    };
    let sdk = sdk.to_string_lossy().to_string();
    let type_name = type_name(name);
    let snake = name.replace('-', "_");
    let cargo = render_cargo(name, &sdk)?;
    let lib = replace_checked(TEMPLATE_LIB, TEMPLATE_TYPE, &type_name)?;
    let lib = replace_checked(&lib, TEMPLATE_WASM, &format!("{snake}.wasm"))?;
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    // `create_dir`, not `create_dir_all`: fails if someone made it in the meantime.
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir(dir.join("src")).map_err(|e| format!("cannot create {}/src: {e}", dir.display()))?;
    write(&dir.join("Cargo.toml"), &cargo)?;
    write(&dir.join("src/lib.rs"), &lib)?;
    write(&dir.join(".gitignore"), "/target\n")?;
    Ok(Created { dir, package: name.to_string(), type_name, wasm: format!("{snake}.wasm"), sdk, sdk_found })
}

fn render_cargo(name: &str, sdk: &str) -> Result<String, String> {
    let text = replace_checked(TEMPLATE_CARGO, TEMPLATE_PACKAGE, &format!("name = \"{name}\""))?;
    let text = replace_checked(
        &text,
        TEMPLATE_HEADER,
        "# A sluice plugin, made by `sluice plugin new`. Write src/lib.rs, then:",
    )?;
    let text = replace_checked(
        &text,
        TEMPLATE_SDK_COMMENT,
        "# The sluice SDK, as `sluice plugin new` found it. If that is not where your SDK is (or will\n\
         # be), point at the SDK you build against instead, e.g.",
    )?;
    replace_checked(&text, TEMPLATE_SDK, &format!("sluice-sdk = {{ path = {} }}", toml_string(sdk)))
}

/// `text` with `from` replaced; an error if the template no longer contains it.
fn replace_checked(text: &str, from: &str, to: &str) -> Result<String, String> {
    if !text.contains(from) {
        return Err(format!("the embedded template has changed: `{from}` not found"));
    }
    Ok(text.replace(from, to))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Rust's keywords and names a plugin crate cannot take (the standard library's, and its own
/// dependencies').
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "serde",
    "sluice_sdk",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// A valid crate name: an ASCII letter, then letters, digits, `-` or `_`; at most 64
/// characters; not a keyword or a reserved name.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{name}` is not a valid plugin crate name: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("more than 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("it must start with an ASCII letter");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return bad(&format!("`{c}` is not allowed (only ASCII letters, digits, `-` and `_`)"));
    }
    if RESERVED.contains(&name.replace('-', "_").to_ascii_lowercase().as_str()) {
        return bad("it is a Rust keyword or a reserved crate name");
    }
    Ok(())
}

/// Names in scope in the template's `lib.rs` that the plugin type must not take.
const TAKEN: &[&str] = &[
    "Batch",
    "Box",
    "Config",
    "Deserialize",
    "Entry",
    "Err",
    "Error",
    "Level",
    "NewEntry",
    "None",
    "Ok",
    "Option",
    "Plugin",
    "Result",
    "Some",
    "Stream",
    "String",
    "Vec",
    "Verdict",
];

/// `my-filter` → `MyFilter` (`Plugin` appended if that is a name already in use).
pub fn type_name(name: &str) -> String {
    let mut out: String = name
        .split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    if TAKEN.contains(&out.as_str()) {
        out.push_str("Plugin");
    }
    out
}

/// What to do next, printed after the crate was written.
pub fn next_steps(created: &Created) -> String {
    let dir = created.dir.display();
    let wasm = &created.wasm;
    let mut s = format!("Created the plugin crate `{}` in {dir}\n\n", created.package);
    if created.sdk_found {
        let _ = writeln!(
            s,
            "Its sluice-sdk dependency points at {} (Cargo.toml). If you move the crate to\n\
             another machine, change it to your checkout of sluice's sdk/ or a git dependency.\n",
            created.sdk
        );
    } else {
        let _ = writeln!(
            s,
            "Its sluice-sdk dependency points at `{}`, which is not an SDK here: set the path in\n\
             Cargo.toml to your checkout of sluice's sdk/ (or a git dependency) before building.\n",
            created.sdk
        );
    }
    let _ = write!(
        s,
        "Next steps:\n\
         \x20 cd {dir}\n\
         \x20 cargo test                                     # the plugin's tests, natively\n\
         \x20 rustup target add wasm32-wasip2                # once\n\
         \x20 cargo build --release --target wasm32-wasip2   # -> target/wasm32-wasip2/release/{wasm}\n\
         \x20 sluice plugin test target/wasm32-wasip2/release/{wasm} \\\n\
         \x20     --config '{{\"drop_if_contains\": [\"GET /health\"], \"mark\": true}}' --input lines.txt\n\
         \n\
         Then run it in sluice: copy {wasm} next to your sluice.yaml and add\n\
         \n\
         \x20 pipelines:\n\
         \x20   main:\n\
         \x20     stages:\n\
         \x20       - plugin: {wasm}\n\
         \x20         config: {{ drop_if_contains: [\"GET /health\"], mark: true }}\n\
         \x20         on_error: pass\n\
         \x20 routes:\n\
         \x20   - sinks: [loki]\n\
         \x20     pipeline: main\n\
         \n\
         `sluice validate --config sluice.yaml` checks it. The guide: sdk/README.md in the sluice\n\
         repository.\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_crate_names() {
        for good in ["my-filter", "redact_emails", "a", "X2"] {
            check_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, why) in [
            ("", "empty"),
            ("2fast", "start with an ASCII letter"),
            ("-x", "start with an ASCII letter"),
            ("my filter", "` ` is not allowed"),
            ("../evil", "start with an ASCII letter"),
            ("a/b", "`/` is not allowed"),
            ("naïve", "`ï` is not allowed"),
            ("self", "keyword"),
            ("sluice-sdk", "reserved"),
            ("test", "reserved"),
        ] {
            let e = check_name(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn type_names_are_camel_case_and_avoid_names_in_scope() {
        assert_eq!(type_name("my-filter"), "MyFilter");
        assert_eq!(type_name("redact__emails_v2"), "RedactEmailsV2");
        assert_eq!(type_name("config"), "ConfigPlugin");
        assert_eq!(type_name("plugin"), "PluginPlugin");
    }

    #[test]
    fn the_template_still_has_every_replaced_part() {
        let cargo = render_cargo("my-filter", "/some/where/sdk").expect("renders");
        assert!(cargo.contains("name = \"my-filter\""), "{cargo}");
        assert!(cargo.contains("sluice-sdk = { path = \"/some/where/sdk\" }"), "{cargo}");
        assert!(!cargo.contains("drop-noise") && !cargo.contains("path = \"..\""), "{cargo}");
        assert!(TEMPLATE_LIB.contains(TEMPLATE_TYPE) && TEMPLATE_LIB.contains(TEMPLATE_WASM));
        assert_eq!(toml_string("C:\\sdk \"x\""), "\"C:\\\\sdk \\\"x\\\"\"");
    }

    #[test]
    fn creates_the_crate_and_refuses_an_existing_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let created = create("my-filter", &dir.path().join("plugins"), None).expect("creates");
        assert_eq!(created.dir, dir.path().join("plugins/my-filter"));
        let lib = std::fs::read_to_string(created.dir.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("impl Plugin for MyFilter") && lib.contains("export!(MyFilter)"), "{lib}");
        assert!(lib.contains("plugins/my_filter.wasm") && !lib.contains("DropNoise"), "{lib}");
        assert!(created.sdk_found, "built in the repository, the SDK is found: {}", created.sdk);
        let cargo = std::fs::read_to_string(created.dir.join("Cargo.toml")).expect("Cargo.toml");
        assert!(cargo.contains(&format!("path = {}", toml_string(&created.sdk))), "{cargo}");
        let e = create("my-filter", &dir.path().join("plugins"), None).expect_err("exists");
        assert!(e.contains("already exists"), "{e}");
        let steps = next_steps(&created);
        assert!(steps.contains("cargo build --release --target wasm32-wasip2"), "{steps}");
        assert!(steps.contains("- plugin: my_filter.wasm"), "{steps}");
    }
}
