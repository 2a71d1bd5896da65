//! The component runner: policies built as WASI components against `wit/`, on the same
//! engine, limits and cluster cache as legacy policies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use guest_adapter::wit::{ContextError, WitListQuery};
use guest_adapter::{AccessReview, GuestSession, PolicyContext, ResourceKind};
use serde_json::value::RawValue;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::answer_text::AnswerText;
use super::guest_output::GuestOutput;
use super::limits::{Limited, MemoryCap, guarded_store, guest_error, instantiation_error};
use super::{EvalError, FirstCompile, GuestCall, GuestVerdict, PolicyGuest, Runtime, Tier};

// The current world: its exports are the same in every version, so one set of export
// bindings serves components built against any of them.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

/// The first shipped version, for its `cluster-context` types.
mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "policy",
    });
}

// `self::`: the WIT package namespace `policy-server` is also this crate's name.
use self::policy_server::policy::cluster_context;
use v0_1_0::policy_server::policy::cluster_context as cluster_context_0_1;

/// A compiled component policy, linked and ready to be instantiated.
pub struct ComponentModule {
    pre: PolicyPre<ComponentState>,
}

impl ComponentModule {
    /// Compiles and links a component: baseline code first when tiered (unless the
    /// compile cache has its optimized code), upgraded to optimized code.
    pub fn compile(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<FirstCompile<Self>> {
        if !runtime.is_tiered() || runtime.has_cached_code(bytes) {
            return Ok(FirstCompile::done(Self::link(
                runtime,
                Tier::Optimized,
                bytes,
            )?));
        }
        let first = match Self::link(runtime, Tier::Baseline, bytes) {
            Ok(first) => first,
            Err(e) => {
                tracing::info!(
                    "compiling optimized code at once: the baseline compiler refused: {e:#}"
                );
                return Ok(FirstCompile::done(Self::link(
                    runtime,
                    Tier::Optimized,
                    bytes,
                )?));
            }
        };
        let bytes = bytes.to_vec();
        Ok(FirstCompile {
            guest: first,
            upgrade: Some(Box::new(move |runtime: &Runtime| {
                Self::link(runtime, Tier::Optimized, &bytes)
            })),
        })
    }

    fn link(runtime: &Runtime, tier: Tier, bytes: &[u8]) -> anyhow::Result<Self> {
        let component = runtime.compile_component(bytes, tier)?;
        let linker = component_linker(component.engine())?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component imports something this host does not provide")?;
        let pre = PolicyPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not implement the `policy` world of wit/")?;
        Ok(Self { pre })
    }
}

impl PolicyGuest for ComponentModule {
    fn validate(
        &self,
        call: GuestCall<'_>,
        request: &RawValue,
        settings: &str,
    ) -> Result<GuestVerdict, EvalError> {
        let verdict =
            ComponentInstance::new(self, call.runtime, call.context.clone(), call.timeout)?
                .validate(request.get(), settings)?;
        GuestVerdict::try_from(verdict)
    }

    fn validate_settings(
        &self,
        call: GuestCall<'_>,
        settings: &str,
    ) -> Result<super::SettingsVerdict, EvalError> {
        let SettingsVerdict { valid, message } =
            ComponentInstance::new(self, call.runtime, call.context.clone(), call.timeout)?
                .validate_settings(settings)?;
        Ok(super::SettingsVerdict { valid, message })
    }

    /// Components have no such operation: the version of the WIT package they target
    /// says it.
    fn protocol_version(&self, _: GuestCall<'_>) -> Option<String> {
        None
    }
}

impl TryFrom<Verdict> for GuestVerdict {
    type Error = EvalError;

    /// The typed verdict of a component, in the shape legacy policies answer with.
    fn try_from(verdict: Verdict) -> Result<Self, Self::Error> {
        let mutated_object = verdict
            .mutated_object
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| EvalError::BadAnswer(format!("mutated-object is not JSON: {e}")))?;
        Ok(Self {
            accepted: verdict.accepted,
            message: verdict.message,
            code: verdict.code,
            mutated_object,
            warnings: Some(verdict.warnings).filter(|w| !w.is_empty()),
            audit_annotations: Some(verdict.audit_annotations.into_iter().collect())
                .filter(|a: &std::collections::BTreeMap<_, _>| !a.is_empty()),
        })
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
            session: {
                let mut session = GuestSession::new(context);
                session.begin(timeout);
                session
            },
            wasi: None,
            table: ResourceTable::new(),
            limits: MemoryCap::new(runtime.config().memory_limit_bytes),
        };
        let mut store = guarded_store(module.pre.engine(), runtime, state, timeout);
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
            self.store.data_mut().session.begin(self.timeout);
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
            // Nothing from the host: no files, no environment, no network. Output goes
            // to the server's log.
            ctx: self.wasi.get_or_insert_with(|| {
                let (stdout, stderr) = GuestOutput::streams(self.session.policy_id().clone());
                WasiCtx::builder().stdout(stdout).stderr(stderr).build()
            }),
            table: &mut self.table,
        }
    }
}

/// `cluster-context` in every shipped version. Each function is a thin lift of its
/// arguments onto the one WIT mapping in `guest_adapter::wit`, and its answer is lowered
/// straight from the cache's bytes ([`AnswerText`]). Linked by hand rather than through
/// the generated `Host` traits, whose `String` answers would cost a copy of every answer
/// first; each signature is still checked against the component's import when it is
/// linked.
fn add_cluster_context(linker: &mut Linker<ComponentState>) -> anyhow::Result<()> {
    type Answer<E> = (Result<AnswerText, E>,);

    let mut v0_2 = linker.instance("policy-server:policy/cluster-context@0.2.0")?;
    v0_2.func_wrap(
        "list",
        |mut store: StoreContextMut<'_, ComponentState>,
         (kind, query): (cluster_context::ResourceKind, cluster_context::ListQuery)|
         -> wasmtime::Result<Answer<cluster_context::Error>> {
            let query = WitListQuery {
                namespace: query.namespace,
                label_selector: query.label_selector,
                field_selector: query.field_selector,
            };
            let answer = store
                .data_mut()
                .session
                .wit_list(kind.api_version, kind.kind, query);
            Ok((answer.map(AnswerText).map_err(error_0_2),))
        },
    )?;
    v0_2.func_wrap(
        "get",
        |mut store: StoreContextMut<'_, ComponentState>,
         (kind, namespace, name): (cluster_context::ResourceKind, Option<String>, String)|
         -> wasmtime::Result<Answer<cluster_context::Error>> {
            let answer =
                store
                    .data_mut()
                    .session
                    .wit_get(kind.api_version, kind.kind, namespace, name);
            Ok((answer.map(AnswerText).map_err(error_0_2),))
        },
    )?;
    v0_2.func_wrap(
        "can-i",
        |mut store: StoreContextMut<'_, ComponentState>,
         (review,): (cluster_context::AccessReview,)|
         -> wasmtime::Result<
            (Result<cluster_context::AccessDecision, cluster_context::Error>,),
        > {
            let attributes = review.resource_attributes;
            let review = AccessReview {
                user: review.user,
                groups: Some(review.groups),
                resource_attributes: guest_adapter::review::ResourceAttributes {
                    namespace: attributes.namespace,
                    verb: attributes.verb,
                    group: attributes.group,
                    version: attributes.version,
                    resource: attributes.resource,
                    subresource: attributes.subresource,
                    name: attributes.name,
                },
            };
            let answer = store.data_mut().session.wit_can_i(&review);
            Ok((answer
                .map_err(error_0_2)
                .and_then(|status| decision(&status.to_bytes())),))
        },
    )?;

    let mut v0_1 = linker.instance("policy-server:policy/cluster-context@0.1.0")?;
    for (function, kind) in [
        ("list-namespaces", ResourceKind::namespaces()),
        ("list-services", ResourceKind::services()),
        ("list-ingresses", ResourceKind::ingresses()),
    ] {
        v0_1.func_wrap(
            function,
            move |mut store: StoreContextMut<'_, ComponentState>,
                  (): ()|
                  -> wasmtime::Result<Answer<cluster_context_0_1::Error>> {
                let answer = store.data_mut().session.wit_list_all(kind.clone());
                Ok((answer.map(AnswerText).map_err(error_0_1),))
            },
        )?;
    }
    Ok(())
}

fn error_0_2(error: ContextError) -> cluster_context::Error {
    use cluster_context::Error;
    match error {
        ContextError::NotAllowed(m) => Error::NotAllowed(m),
        ContextError::NotFound(m) => Error::NotFound(m),
        ContextError::Unavailable(m) => Error::Unavailable(m),
        ContextError::Invalid(m) => Error::Invalid(m),
    }
}

/// `@0.1.0` has no `not-found`: it only lists, which never finds nothing.
fn error_0_1(error: ContextError) -> cluster_context_0_1::Error {
    use cluster_context_0_1::Error;
    match error {
        ContextError::NotAllowed(m) => Error::NotAllowed(m),
        ContextError::Unavailable(m) => Error::Unavailable(m),
        ContextError::Invalid(m) | ContextError::NotFound(m) => Error::Invalid(m),
    }
}

/// The typed decision from the API server's `SubjectAccessReviewStatus` JSON.
fn decision(status: &[u8]) -> Result<cluster_context::AccessDecision, cluster_context::Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Status {
        allowed: bool,
        #[serde(default)]
        denied: Option<bool>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        evaluation_error: Option<String>,
    }
    let status: Status = serde_json::from_slice(status).map_err(|e| {
        cluster_context::Error::Unavailable(format!(
            "the API server's answer is not a SubjectAccessReviewStatus: {e}"
        ))
    })?;
    Ok(cluster_context::AccessDecision {
        allowed: status.allowed,
        denied: status.denied.unwrap_or(false),
        reason: status.reason,
        evaluation_error: status.evaluation_error,
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
