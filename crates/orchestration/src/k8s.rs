//! Kubernetes actions through kube-rs: scale, rollout restart, cordon/uncordon, delete a
//! pod, isolate pods behind a deny-all NetworkPolicy.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use firebreak_runbook::{ActionError, ActionErrorKind};

/// Which cluster the `k8s` actions talk to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeOptions {
    /// The API server; absent means in-cluster configuration or `KUBECONFIG`.
    #[serde(default)]
    pub url: Option<String>,
}

/// A lazily built client: a Firebreak with no cluster starts fine and fails only the runs
/// that call `k8s` actions.
#[derive(Default)]
pub(crate) struct Kube {
    options: KubeOptions,
    client: OnceCell<Client>,
}

impl Kube {
    pub(crate) fn new(options: KubeOptions) -> Self {
        Self {
            options,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<Client, ActionError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let config = match &self.options.url {
                    Some(url) => Config::new(
                        url.parse()
                            .map_err(|e| format!("kubernetes.url {url:?}: {e}"))?,
                    ),
                    None => Config::infer()
                        .await
                        .map_err(|e| format!("no Kubernetes configuration: {e}"))?,
                };
                Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
            })
            .await
            .map_err(|e: String| ActionError::new(ActionErrorKind::Failed, e))?;
        Ok(client.clone())
    }

    /// Performs `k8s.<verb>` with `args` as the script passed them.
    pub(crate) async fn perform(&self, action: &str, a: &Value) -> Result<Value, ActionError> {
        let client = self.client().await?;
        let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
        let (ns, name) = (s("namespace"), s("name"));
        match action {
            "k8s.scale" => {
                let replicas = a["replicas"].as_i64().unwrap_or(0);
                let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
                let pp = PatchParams::default();
                match s("kind").as_str() {
                    "statefulset" => Api::<StatefulSet>::namespaced(client, &ns)
                        .patch_scale(&name, &pp, &patch)
                        .await
                        .map_err(kube_error)?,
                    _ => Api::<Deployment>::namespaced(client, &ns)
                        .patch_scale(&name, &pp, &patch)
                        .await
                        .map_err(kube_error)?,
                };
                Ok(json!({ "ok": true, "replicas": replicas }))
            }
            "k8s.rollout_restart" => {
                // What `kubectl rollout restart` does: stamp the pod template so the
                // controller rolls every pod.
                let at = time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                let patch = Patch::Merge(json!({ "spec": { "template": { "metadata": {
                    "annotations": { "kubectl.kubernetes.io/restartedAt": at },
                } } } }));
                let pp = PatchParams::default();
                match s("kind").as_str() {
                    "statefulset" => {
                        Api::<StatefulSet>::namespaced(client, &ns)
                            .patch(&name, &pp, &patch)
                            .await
                            .map_err(kube_error)?;
                    }
                    _ => {
                        Api::<Deployment>::namespaced(client, &ns)
                            .patch(&name, &pp, &patch)
                            .await
                            .map_err(kube_error)?;
                    }
                }
                Ok(json!({ "ok": true, "restarted_at": at }))
            }
            "k8s.cordon" | "k8s.uncordon" => {
                let nodes = Api::<Node>::all(client);
                let node = s("node");
                if action == "k8s.cordon" {
                    nodes.cordon(&node).await.map_err(kube_error)?;
                } else {
                    nodes.uncordon(&node).await.map_err(kube_error)?;
                }
                Ok(json!({ "ok": true }))
            }
            "k8s.delete_pod" => {
                let pods = Api::<Pod>::namespaced(client, &ns);
                match pods.delete(&s("pod"), &DeleteParams::default()).await {
                    Ok(_) => Ok(json!({ "ok": true })),
                    // Already gone is what the step wanted: a retry after a crash lands here.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        Ok(json!({ "ok": true, "already_gone": true }))
                    }
                    Err(e) => Err(kube_error(e)),
                }
            }
            "k8s.isolate" => {
                let selector = a["selector"].clone();
                let policy_name = isolation_name(&selector);
                let policy: NetworkPolicy = serde_json::from_value(json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {
                        "name": policy_name,
                        "labels": { "app.kubernetes.io/managed-by": "firebreak" },
                    },
                    // No ingress or egress rules: the selected pods talk to nobody.
                    "spec": {
                        "podSelector": { "matchLabels": selector },
                        "policyTypes": ["Ingress", "Egress"],
                    },
                }))
                .map_err(|e| {
                    ActionError::new(
                        ActionErrorKind::InvalidArgument,
                        format!("network policy: {e}"),
                    )
                })?;
                // Server-side apply: applying the same policy again changes nothing.
                Api::<NetworkPolicy>::namespaced(client, &ns)
                    .patch(
                        &policy_name,
                        &PatchParams::apply("firebreak").force(),
                        &Patch::Apply(&policy),
                    )
                    .await
                    .map_err(kube_error)?;
                Ok(json!({ "ok": true, "network_policy": policy_name }))
            }
            other => Err(ActionError::new(
                ActionErrorKind::InvalidArgument,
                format!("unknown action {other}"),
            )),
        }
    }
}

/// `firebreak-isolate-<digest of the selector>`: the same pods get the same policy.
fn isolation_name(selector: &Value) -> String {
    let digest = firebreak_runbook::digest("k8s.isolate", selector);
    format!("firebreak-isolate-{}", &digest[..10])
}

fn kube_error(e: kube::Error) -> ActionError {
    match &e {
        kube::Error::Api(s) => ActionError::new(
            ActionErrorKind::Status(s.code),
            format!("kubernetes answered {}: {}", s.code, s.message),
        ),
        _ => ActionError::new(
            ActionErrorKind::Transport,
            format!("kubernetes request failed: {e}"),
        ),
    }
}
