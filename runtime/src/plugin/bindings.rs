//! Host bindings generated from the contract (`sdk/wit`, world `log-plugin`): synchronous
//! calls, the `host` interface as a trait that [`super::host::HostState`] implements.

wasmtime::component::bindgen!({
    world: "log-plugin",
    path: "../sdk/wit",
});
