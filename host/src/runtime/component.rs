//! The component runner: policies built as WASI components against `wit/`, on the same
//! engine, limits and cluster cache as legacy policies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use guest_adapter::{ClusterQuery, GuestSession, HostCallError, PolicyContext, ResourceKind};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{Limited, MemoryCap, guarded_store, guest_error, instantiation_error};
use super::{EvalError, Runtime};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

// `self::`: the WIT package namespace `policy-server` is also this crate's name.
use self::policy_server::policy::cluster_context;

/// A compiled component policy, linked and ready to be instantiated.
pub struct ComponentModule {
    pre: PolicyPre<ComponentState>,
}

impl ComponentModule {
    pub fn compile(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<Self> {
        let component = Component::new(runtime.engine(), bytes).map_err(anyhow::Error::from)?;
        let linker = component_linker(runtime.engine())?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component imports something this host does not provide")?;
        let pre = PolicyPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not implement the `policy` world of wit/")?;
        Ok(Self { pre })
    }

    /// Runs `validate` in a fresh instance.
    pub fn validate(
        &self,
        runtime: &Runtime,
        context: Arc<PolicyContext>,
        timeout: Duration,
        request: &str,
        settings: &str,
    ) -> Result<Verdict, EvalError> {
        ComponentInstance::new(self, runtime, context, timeout)?.validate(request, settings)
    }

    /// Runs `validate-settings` in a fresh instance.
    pub fn validate_settings(
        &self,
        runtime: &Runtime,
        context: Arc<PolicyContext>,
        timeout: Duration,
        settings: &str,
    ) -> Result<SettingsVerdict, EvalError> {
        ComponentInstance::new(self, runtime, context, timeout)?.validate_settings(settings)
    }
}

/// One live component instance. The server makes one per evaluation; benchmarks also
/// reuse one to measure what a fresh instance costs.
pub struct ComponentInstance<'r> {
    store: Store<ComponentState>,
    bindings: Policy,
    runtime: &'r Runtime,
    timeout: Duration,
    /// The deadline set at instantiation covers the first call.
    first_call: bool,
}

impl<'r> ComponentInstance<'r> {
    pub fn new(
        module: &ComponentModule,
        runtime: &'r Runtime,
        context: Arc<PolicyContext>,
        timeout: Duration,
    ) -> Result<Self, EvalError> {
        let state = ComponentState {
            session: GuestSession::new(context),
            wasi: None,
            table: ResourceTable::new(),
            limits: MemoryCap::new(runtime.config().memory_limit_bytes),
        };
        let mut store = guarded_store(runtime, state, timeout);
        let bindings = match module.pre.instantiate(&mut store) {
            Ok(bindings) => bindings,
            Err(e) => return Err(instantiation_error(&mut store, e, timeout)),
        };
        Ok(Self {
            store,
            bindings,
            runtime,
            timeout,
            first_call: true,
        })
    }

    pub fn validate(&mut self, request: &str, settings: &str) -> Result<Verdict, EvalError> {
        self.call(|bindings, store| bindings.call_validate(store, request, settings))
    }

    pub fn validate_settings(&mut self, settings: &str) -> Result<SettingsVerdict, EvalError> {
        self.call(|bindings, store| bindings.call_validate_settings(store, settings))
    }

    fn call<R>(
        &mut self,
        call: impl FnOnce(&Policy, &mut Store<ComponentState>) -> wasmtime::Result<R>,
    ) -> Result<R, EvalError> {
        if !std::mem::take(&mut self.first_call) {
            // A reused instance: a new deadline, and a new look at the cluster cache.
            self.store
                .set_epoch_deadline(self.runtime.deadline_ticks(self.timeout));
            self.store.data_mut().session.reset();
        }
        call(&self.bindings, &mut self.store)
            .map_err(|e| guest_error(&mut self.store, e, self.timeout))
    }
}

/// Per-instance host state of a component.
pub struct ComponentState {
    session: GuestSession,
    /// Built on first use, which an evaluation may never reach: building it for every
    /// instance cost about 3 µs of each fresh evaluation.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    limits: MemoryCap,
}

impl Limited for ComponentState {
    fn memory_cap(&mut self) -> &mut MemoryCap {
        &mut self.limits
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            // Nothing from the host: no files, no environment, no network.
            ctx: self.wasi.get_or_insert_with(|| WasiCtx::builder().build()),
            table: &mut self.table,
        }
    }
}

/// The WIT interface `cluster-context`, as components import it.
const CLUSTER_CONTEXT: &str = "policy-server:policy/cluster-context@0.1.0";

/// `cluster-context`: typed calls onto the same queries, access rules and snapshots as
/// the legacy host calls. Linked by hand rather than through the generated `Host` trait,
/// whose `String` answers would cost a copy of every List before the copy into the guest:
/// here the cached text is lowered straight from the shared string. Its signature is
/// still checked against the component's import when a component is linked.
fn add_cluster_context(linker: &mut Linker<ComponentState>) -> anyhow::Result<()> {
    let mut interface = linker.instance(CLUSTER_CONTEXT)?;
    for (function, kind) in [
        ("list-namespaces", ResourceKind::namespaces()),
        ("list-services", ResourceKind::services()),
        ("list-ingresses", ResourceKind::ingresses()),
    ] {
        let query = ClusterQuery::ListAll(kind);
        interface.func_wrap(
            function,
            move |mut store: StoreContextMut<'_, ComponentState>, (): ()| {
                Ok((list(&mut store.data_mut().session, &query),))
            },
        )?;
    }
    Ok(())
}

fn list(
    session: &mut GuestSession,
    query: &ClusterQuery,
) -> Result<Arc<str>, cluster_context::Error> {
    session
        .query(query)
        .map(|list| list.shared())
        .map_err(|err| match &err {
            HostCallError::NotAllowed { .. } => cluster_context::Error::NotAllowed(err.to_string()),
            HostCallError::Cache { .. } => cluster_context::Error::Unavailable(err.to_string()),
            HostCallError::Unknown { .. } | HostCallError::MalformedPayload { .. } => {
                cluster_context::Error::Invalid(err.to_string())
            }
        })
}

fn component_linker(engine: &Engine) -> anyhow::Result<Linker<ComponentState>> {
    let mut linker = Linker::new(engine);
    // Components built by Rust for wasm32-wasip2 import wasi:cli and wasi:io even when
    // unused; the context behind them is empty.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    add_cluster_context(&mut linker)?;
    Ok(linker)
}
