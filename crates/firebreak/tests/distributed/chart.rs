//! The Kubernetes manifests as a platform team installs them: `kubectl kustomize` renders the
//! production overlay; its objects are held to what deploy/kubernetes/README.md promises; and
//! real `firebreak migrate` and `firebreak serve` processes run with the rendered Job's and
//! Deployments' arguments, environment (plus the service-link variables Kubernetes would add)
//! and mounted ConfigMaps and Secrets (the example Secrets; laid out as the kubelet does), on
//! a test Postgres and nats-server, until the probes' gRPC health names answer SERVING.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firebreak_proto::v1;
use serde::Deserialize;
use serde_yaml::Value;

use crate::harness::{BIN, Deployment, SERVICES, eventually, free_port};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The rendered production overlay, or `None` (saying why) when kubectl is not installed.
fn render() -> Option<Vec<Value>> {
    render_dir(Path::new(&format!(
        "{REPO}/deploy/kubernetes/overlays/production"
    )))
}

/// The rendered kustomization in `overlay`, or `None` (saying why) when kubectl is not
/// installed.
fn render_dir(overlay: &Path) -> Option<Vec<Value>> {
    let overlay = overlay.display().to_string();
    let out = match Command::new("kubectl")
        .args(["kustomize", &overlay])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "skipped: kubectl is not installed, so the overlay cannot be rendered (kubectl, with kustomize, comes with the machine image)"
            );
            return None;
        }
        Err(e) => panic!("running kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(documents(&String::from_utf8(out.stdout).unwrap()))
}

/// The documents of a multi-document YAML text.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered overlay"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|s| str_of(s).to_owned())
        .collect()
}

/// The one container of a workload's pod template.
fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1, "{workload:?}");
    &containers[0]
}

#[test]
fn the_rendered_overlay_keeps_the_charts_promises() {
    let Some(objects) = render() else { return };
    for o in &objects {
        let kind = str_of(&o["kind"]);
        let cluster_scoped = matches!(kind, "Namespace" | "ClusterRole");
        let ns = o["metadata"]["namespace"].as_str();
        if kind == "RoleBinding" {
            assert_ne!(ns, Some("firebreak"), "{o:?}");
        } else if !cluster_scoped {
            assert_eq!(ns, Some("firebreak"), "{kind} {:?}", o["metadata"]["name"]);
        }
    }
    let namespace = find(&objects, "Namespace", "firebreak");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    let mut workloads: Vec<&Value> = kind_of(&objects, "Deployment");
    assert_eq!(workloads.len(), 4);
    let job = find(&objects, "Job", "firebreak-migrate");
    workloads.push(job);
    for w in &workloads {
        let name = str_of(&w["metadata"]["name"]);
        let pod = &w["spec"]["template"]["spec"];
        let c = container(w);
        // A pinned image: a version tag and a digest, never :latest.
        let image = str_of(&c["image"]);
        let (tagged, digest) = image.split_once('@').expect("the image has a digest");
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{image}"
        );
        let tag = tagged.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest", "{image}");
        // The restricted security context.
        assert_eq!(pod["enableServiceLinks"], false, "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["runAsUser"], 10001, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        for r in ["requests", "limits"] {
            for what in ["cpu", "memory"] {
                assert!(c["resources"][r][what].is_string(), "{name}: {r}.{what}");
            }
        }
        // Only orchestration holds a Kubernetes API token.
        let token = pod["automountServiceAccountToken"] == true;
        assert_eq!(token, name == "firebreak-orchestration", "{name}");
        // Every ConfigMap a pod mounts is in the overlay; /tmp is writable.
        let volumes = pod["volumes"].as_sequence().unwrap();
        for v in volumes {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                find(&objects, "ConfigMap", cm);
            }
        }
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| str_of(&m["mountPath"]))
            .collect();
        assert!(mounts.contains(&"/tmp"), "{name}: {mounts:?}");

        // Secrets are read-only files, never environment variables: mode 0440, owned by group
        // 10001 (fsGroup), the process's group.
        assert_eq!(pod["securityContext"]["fsGroup"], 10001, "{name}");
        assert_eq!(pod["securityContext"]["runAsGroup"], 10001, "{name}");
        assert!(c["envFrom"].is_null(), "{name}");
        let env = c["env"].as_sequence().unwrap();
        for e in env {
            assert!(e["valueFrom"].is_null(), "{name}: {e:?}");
        }
        let mut secret_mounts = BTreeMap::new();
        for v in volumes.iter().filter(|v| v["secret"].is_mapping()) {
            let secret = str_of(&v["secret"]["secretName"]);
            assert_eq!(v["secret"]["defaultMode"], 0o440, "{name}: {secret}");
            let mount = c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|m| m["name"] == v["name"])
                .unwrap_or_else(|| panic!("{name}: {secret} is not mounted"));
            assert_eq!(mount["readOnly"], true, "{name}: {secret}");
            secret_mounts.insert(secret, str_of(&mount["mountPath"]));
        }
        // The migrate Job needs no token.
        let want: &[&str] = if name == "firebreak-migrate" {
            &["firebreak-db", "firebreak-secrets"]
        } else {
            &["firebreak-auth", "firebreak-db", "firebreak-secrets"]
        };
        assert_eq!(secret_mounts.keys().copied().collect::<Vec<_>>(), want);
        // Only an optional Secret may be missing: the firebreak-secrets of the operator's own.
        for v in volumes.iter().filter(|v| v["secret"].is_mapping()) {
            let optional = v["secret"]["optional"] == true;
            assert_eq!(optional, v["secret"]["secretName"] == "firebreak-secrets");
        }
        // Each `*_file` key (the configuration file's, or a `*_FILE` variable) names a key of
        // its Secret, as the example Secrets (and deploy/kubernetes/README.md) have them;
        // FIREBREAK_SECRETS_DIR is firebreak-secrets.
        let secrets = example_secrets();
        let config_map = volumes
            .iter()
            .find(|v| v["name"] == "config")
            .map(|v| str_of(&v["configMap"]["name"]))
            .unwrap();
        let config: Value = serde_yaml::from_str(str_of(
            &find(&objects, "ConfigMap", config_map)["data"]["firebreak.yaml"],
        ))
        .unwrap();
        let database_url_file = str_of(&config["database_url_file"]);
        let mut files = vec![("database_url_file", database_url_file)];
        for e in env {
            let (var, value) = (str_of(&e["name"]), str_of(&e["value"]));
            if var == "FIREBREAK_SECRETS_DIR" {
                assert_eq!(value, secret_mounts["firebreak-secrets"], "{name}");
            } else if var.ends_with("_FILE") {
                files.push((var, value));
            }
        }
        for (key, path) in files {
            let (secret, file) = secret_mounts
                .iter()
                .find_map(|(s, at)| Some((*s, path.strip_prefix(at)?.strip_prefix('/')?)))
                .unwrap_or_else(|| panic!("{name}: {key}: {path} is in no Secret's mount"));
            assert!(
                secrets[secret].contains_key(file),
                "{name}: {key}: the Secret {secret} has no key {file}"
            );
            if key == "database_url_file" {
                assert_eq!(secret, "firebreak-db");
            }
        }
        let vars: Vec<&str> = env.iter().map(|e| str_of(&e["name"])).collect();
        assert!(vars.contains(&"FIREBREAK_SECRETS_DIR"), "{name}");
        let tokens = [
            "FIREBREAK_AUTH__SERVICE_TOKEN_FILE",
            "FIREBREAK_AUTH__ADMIN_TOKEN_FILE",
        ];
        for t in tokens {
            assert_eq!(
                vars.contains(&t),
                name != "firebreak-migrate",
                "{name}: {t}"
            );
        }
    }

    for service in SERVICES {
        let d = find(&objects, "Deployment", &format!("firebreak-{service}"));
        let c = container(d);
        let args = strings(&c["args"]);
        assert_eq!(args[..2], ["serve".to_owned(), service.to_owned()]);
        assert!(args.contains(&"--no-migrate".to_owned()), "{args:?}");
        // Startup and liveness ask the process's liveness name, readiness its service name,
        // all through the native gRPC probe.
        for (probe, health) in [
            ("startupProbe", format!("{service}.live")),
            ("livenessProbe", format!("{service}.live")),
            ("readinessProbe", service.to_owned()),
        ] {
            assert_eq!(c[probe]["grpc"]["port"], 7400, "{service} {probe}");
            assert_eq!(
                c[probe]["grpc"]["service"],
                health.as_str(),
                "{service} {probe}"
            );
        }
        let spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .as_sequence()
            .unwrap();
        assert!(spread.len() >= 2, "{service}");
        let pdb = find(
            &objects,
            "PodDisruptionBudget",
            &format!("firebreak-{service}"),
        );
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            d["spec"]["selector"]["matchLabels"]
        );
        find(&objects, "Service", &format!("firebreak-{service}"));
    }
    let hpa = find(&objects, "HorizontalPodAutoscaler", "firebreak-intake");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "firebreak-intake");
    // The autoscaler owns intake's replica count.
    assert!(find(&objects, "Deployment", "firebreak-intake")["spec"]["replicas"].is_null());
    let monitor = find(&objects, "ServiceMonitor", "firebreak");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // Migrations run once, in a hook, not in every replica.
    assert_eq!(strings(&container(job)["args"])[0], "migrate");
    assert_eq!(
        job["metadata"]["annotations"]["argocd.argoproj.io/hook"],
        "PreSync"
    );

    // RBAC: exactly the runbooks' k8s:: actions, bound to orchestration only.
    let role = find(&objects, "ClusterRole", "firebreak-runbook-actions");
    let mut rules: Vec<String> = Vec::new();
    for r in role["rules"].as_sequence().unwrap() {
        for res in strings(&r["resources"]) {
            for verb in strings(&r["verbs"]) {
                rules.push(format!("{res}:{verb}"));
            }
        }
    }
    rules.sort();
    assert_eq!(
        rules,
        [
            "deployments/scale:patch",
            "deployments:patch",
            "networkpolicies:create",
            "networkpolicies:patch",
        ]
    );
    assert!(kind_of(&objects, "ClusterRoleBinding").is_empty());
    let bindings = kind_of(&objects, "RoleBinding");
    assert!(!bindings.is_empty());
    for b in bindings {
        assert_eq!(b["roleRef"]["name"], "firebreak-runbook-actions");
        let subjects = b["subjects"].as_sequence().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0]["name"], "firebreak-orchestration");
        assert_eq!(subjects[0]["namespace"], "firebreak");
    }

    // NetworkPolicies: everything denied first, then the architecture's paths.
    let deny = find(&objects, "NetworkPolicy", "firebreak-default-deny");
    assert_eq!(strings(&deny["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());
    let triage = find(&objects, "NetworkPolicy", "firebreak-triage");
    assert_eq!(
        triage["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "intake"
    );

    // The runbooks ConfigMap holds every shipped runbook's manifest and script, no fixture.
    let volumes = find(&objects, "Deployment", "firebreak-orchestration")["spec"]["template"]
        ["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    let runbooks = volumes
        .iter()
        .filter_map(|v| v["configMap"]["name"].as_str())
        .find(|n| n.starts_with("firebreak-runbooks"))
        .expect("orchestration mounts the runbooks ConfigMap");
    let data = find(&objects, "ConfigMap", runbooks)["data"]
        .as_mapping()
        .unwrap();
    let mut keys: Vec<String> = data.keys().map(|k| str_of(k).to_owned()).collect();
    keys.sort();
    let mut shipped: Vec<String> = std::fs::read_dir(format!("{REPO}/runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| (n.ends_with(".yaml") && !n.ends_with(".test.yaml")) || n.ends_with(".rhai"))
        .collect();
    shipped.sort();
    assert_eq!(
        keys, shipped,
        "runbooks/Kustomization must list every runbook file"
    );
}

/// A pod's container run as a process: its environment is exactly what Kubernetes would give
/// it, its mounts are directories under the test's root, and it is killed on drop.
struct Pod {
    name: String,
    child: Child,
    grpc: u16,
    http: u16,
    log: PathBuf,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pod {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// What the test puts where the cluster would: Postgres, NATS, the Services' addresses and
/// the example Secrets.
struct Cluster<'a> {
    objects: &'a [Value],
    /// The example Secrets' data, by Secret name.
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    root: PathBuf,
    /// The test's database URL, with `{service}`.
    database_url: String,
    nats_url: String,
    /// Each service's ports on this machine: (gRPC, HTTP).
    ports: BTreeMap<&'static str, (u16, u16)>,
}

/// A volume mounted in a pod: where the container sees it, where it is on this machine.
type Mounts = Vec<(String, PathBuf)>;

/// `path` as the container names it, on this machine: inside a mounted volume, its local
/// copy; elsewhere, `None`.
fn on_this_machine(mounts: &Mounts, path: &str) -> Option<String> {
    mounts.iter().find_map(|(at, local)| {
        let rest = path.strip_prefix(at.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", local.display()))
    })
}

/// Fills `dir` as the kubelet's atomic writer fills a ConfigMap or Secret volume: the files
/// in a timestamped directory that `..data` links to, each name a link through `..data`,
/// each file of `mode` when the volume gives one (a Secret's `defaultMode`).
fn write_volume(dir: &Path, files: &[(String, String)], mode: Option<u32>) {
    use std::os::unix::fs::PermissionsExt;
    let stamp = dir.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir(&stamp).unwrap();
    for (key, text) in files {
        let file = stamp.join(key);
        std::fs::write(&file, text).unwrap();
        if let Some(mode) = mode {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink(Path::new("..data").join(key), dir.join(key)).unwrap();
    }
    std::os::unix::fs::symlink(stamp.file_name().unwrap(), dir.join("..data")).unwrap();
}

impl Cluster<'_> {
    /// Lays out `workload`'s volumes under the test root as the kubelet would mount them: a
    /// ConfigMap's or a Secret's keys as files ([`write_volume`]), an optional Secret that
    /// does not exist as an empty directory, an emptyDir as an empty directory.
    fn mount(&self, pod: &str, workload: &Value) -> Mounts {
        let spec = &workload["spec"]["template"]["spec"];
        let volume_mounts = container(workload)["volumeMounts"].as_sequence().unwrap();
        // Where each is, first: the configuration file names paths in the others.
        let all: Mounts = volume_mounts
            .iter()
            .map(|m| {
                let at = str_of(&m["mountPath"]).to_owned();
                let local = self.root.join(pod).join(at.trim_start_matches('/'));
                (at, local)
            })
            .collect();
        for (m, (_, local)) in volume_mounts.iter().zip(&all) {
            std::fs::create_dir_all(local).unwrap();
            let volume = spec["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|v| v["name"] == m["name"])
                .unwrap();
            if let Some(cm) = volume["configMap"]["name"].as_str() {
                let data = find(self.objects, "ConfigMap", cm)["data"]
                    .as_mapping()
                    .unwrap();
                let files: Vec<(String, String)> = data
                    .iter()
                    .map(|(k, v)| {
                        let text = self.localize(cm, str_of(k), str_of(v), &all);
                        (str_of(k).to_owned(), text)
                    })
                    .collect();
                write_volume(local, &files, None);
            } else if volume["secret"].is_mapping() {
                let secret = &volume["secret"];
                let name = str_of(&secret["secretName"]);
                assert!(secret["items"].is_null(), "{name}: items are not laid out");
                let mode = secret["defaultMode"].as_u64().map(|m| m as u32);
                match self.secrets.get(name) {
                    Some(data) => {
                        let files: Vec<(String, String)> = data
                            .iter()
                            .map(|(k, v)| (k.clone(), self.secret_text(name, k, v)))
                            .collect();
                        write_volume(local, &files, mode);
                    }
                    // The kubelet mounts an optional Secret that does not exist as an empty
                    // volume; a required one keeps the pod from starting.
                    None => assert!(
                        secret["optional"] == true,
                        "{pod}: the Secret {name} is required and no example of it exists"
                    ),
                }
            } else {
                assert!(volume["emptyDir"].is_mapping(), "{volume:?}");
            }
        }
        all
    }

    /// A Secret's value as the test's cluster holds it: the example database URL names the
    /// cluster's Postgres, so it becomes the test's (keeping `{service}`).
    fn secret_text(&self, secret: &str, key: &str, value: &str) -> String {
        if (secret, key) == ("firebreak-db", "url") {
            assert!(value.contains("{service}"), "{value}");
            return self.database_url.clone();
        }
        value.to_owned()
    }

    /// The configuration file with the cluster's names (NATS, the peers' Services) replaced
    /// by the test's servers, what the cluster's DNS would do, and the paths into the pod's
    /// volumes by their local copies. Other files are left alone.
    ///
    /// It also gets what an operator's overlay adds for secrets of its own
    /// (deploy/kubernetes/README.md, "Secrets"): an integration whose key is a file of the
    /// firebreak-secrets Secret (`key_file`), and a channel whose signing secret is named by
    /// `{secret: NAME}` from the same Secret's directory (`secrets_dir`). Each pod loads and
    /// checks them: the Job and every service fail to start if the file is not mounted,
    /// notification if the name is not found.
    fn localize(&self, config_map: &str, key: &str, text: &str, mounts: &Mounts) -> String {
        if !(config_map.starts_with("firebreak-config") && key == "firebreak.yaml") {
            return text.to_owned();
        }
        let mut config: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(config["nats"]["url"], "nats://nats.nats.svc:4222");
        config["nats"]["url"] = self.nats_url.clone().into();
        for (peer, service) in [
            ("triage", "firebreak-triage-headless"),
            ("notification", "firebreak-notification"),
        ] {
            assert_eq!(
                config["peers"][peer],
                format!("http://{service}:7400").as_str()
            );
            let port = self.ports[peer].0;
            config["peers"][peer] = format!("http://127.0.0.1:{port}").into();
        }
        assert!(config["integrations"].is_null() && config["channels"].is_null());
        config["integrations"] = serde_yaml::from_str(
            "- name: cluster-alertmanager
  kind: alertmanager
  key_file: /etc/firebreak/secrets/named/alertmanager-key",
        )
        .unwrap();
        // Sent only when an incident resolves, which none does here.
        config["channels"] = serde_yaml::from_str(
            "- name: ops
  kind: webhook
  url: http://127.0.0.1:9/firebreak
  signing_secret: {secret: ops-webhook-key}
  events: [resolved]",
        )
        .unwrap();
        fn paths(v: &mut Value, mounts: &Mounts) {
            match v {
                Value::String(s) => {
                    if let Some(local) = on_this_machine(mounts, s) {
                        *s = local;
                    }
                }
                Value::Sequence(items) => items.iter_mut().for_each(|i| paths(i, mounts)),
                Value::Mapping(map) => map.values_mut().for_each(|i| paths(i, mounts)),
                _ => {}
            }
        }
        paths(&mut config, mounts);
        serde_yaml::to_string(&config).unwrap()
    }

    /// The container's environment: its `env` (values only: no Secret reaches it, and a
    /// path into a volume is moved to the volume's local copy), and the service-link
    /// variables the kubelet adds for every Service with a cluster IP
    /// (`FIREBREAK_INTAKE_SERVICE_HOST`, `FIREBREAK_INTAKE_PORT_7400_TCP_ADDR`, ...), which
    /// the chart turns off and the configuration must ignore all the same.
    fn env(&self, workload: &Value, mounts: &Mounts) -> Vec<(String, String)> {
        let c = container(workload);
        assert!(c["envFrom"].is_null(), "{c:?}");
        let mut env = Vec::new();
        for e in c["env"].as_sequence().into_iter().flatten() {
            let name = str_of(&e["name"]).to_owned();
            assert!(
                e["valueFrom"].is_null(),
                "{name}: the environment takes nothing from a Secret or elsewhere, only values"
            );
            let value = str_of(&e["value"]);
            let value = on_this_machine(mounts, value).unwrap_or_else(|| value.to_owned());
            env.push((name, value));
        }
        for (n, s) in kind_of(self.objects, "Service").into_iter().enumerate() {
            if s["spec"]["clusterIP"] == "None" {
                continue;
            }
            let prefix = str_of(&s["metadata"]["name"])
                .to_uppercase()
                .replace('-', "_");
            let ip = format!("10.96.0.{}", n + 10);
            let ports = s["spec"]["ports"].as_sequence().unwrap();
            let first = ports[0]["port"].as_u64().unwrap();
            env.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
            env.push((format!("{prefix}_SERVICE_PORT"), first.to_string()));
            env.push((format!("{prefix}_PORT"), format!("tcp://{ip}:{first}")));
            for p in ports {
                let port = p["port"].as_u64().unwrap();
                let pname = str_of(&p["name"]).to_uppercase();
                env.push((format!("{prefix}_SERVICE_PORT_{pname}"), port.to_string()));
                let tcp = format!("{prefix}_PORT_{port}_TCP");
                env.push((tcp.clone(), format!("tcp://{ip}:{port}")));
                env.push((format!("{tcp}_PROTO"), "tcp".into()));
                env.push((format!("{tcp}_PORT"), port.to_string()));
                env.push((format!("{tcp}_ADDR"), ip.clone()));
            }
        }
        env
    }

    /// The container's command: the image's entrypoint (`firebreak`) with the rendered
    /// arguments, its mounts and listen addresses moved to this machine.
    fn command(&self, pod: &str, workload: &Value, ports: Option<(u16, u16)>) -> Command {
        // A new pod: its volumes start afresh (the Job runs twice).
        let _ = std::fs::remove_dir_all(self.root.join(pod));
        let mounts = self.mount(pod, workload);
        let mut args = strings(&container(workload)["args"]);
        for a in args.iter_mut() {
            if let Some(local) = on_this_machine(&mounts, a) {
                *a = local;
            }
            if let Some((grpc, http)) = ports {
                if a == "0.0.0.0:7400" {
                    *a = format!("127.0.0.1:{grpc}");
                } else if a == "0.0.0.0:7401" {
                    *a = format!("127.0.0.1:{http}");
                }
            }
        }
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .env_clear()
            .envs(self.env(workload, &mounts))
            .current_dir(self.root.join(pod));
        cmd
    }

    /// Starts a Deployment's container; returns once it listens.
    fn start(&self, service: &'static str) -> Pod {
        let d = find(self.objects, "Deployment", &format!("firebreak-{service}"));
        let c = container(d);
        let ports: Vec<u64> = c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [7400, 7401]);
        let (grpc, http) = self.ports[service];
        let name = format!("{service}-0");
        let log = self.root.join(format!("{name}.log"));
        let child = self
            .command(&name, d, Some((grpc, http)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut pod = Pod {
            name,
            child,
            grpc,
            http,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            assert!(pod.alive(), "{} exited:\n{}", pod.name, pod.log());
            assert!(Instant::now() < deadline, "{} did not listen", pod.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        pod
    }

    /// Runs the migrate Job's container to its end; its stdout.
    fn migrate(&self) -> String {
        let job = find(self.objects, "Job", "firebreak-migrate");
        let out = self.command("migrate", job, None).output().unwrap();
        assert!(
            out.status.success(),
            "the migrate Job failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A GET over a fresh connection: status and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// A POST of a JSON body over a fresh connection: its status.
fn http_post(port: u16, path: &str, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// What the kubelet's gRPC probe sees for `service`: SERVING, NOT_SERVING, NOT_FOUND, or
/// the error.
async fn grpc_health(port: u16, service: &str) -> String {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return "unreachable".into();
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    match health.check(request).await {
        Ok(r) => r.into_inner().status().as_str_name().to_owned(),
        Err(s) if s.code() == tonic::Code::NotFound => "NOT_FOUND".into(),
        Err(s) => format!("error: {s}"),
    }
}

/// The example Secrets' string data, by Secret name.
fn example_secrets() -> BTreeMap<String, BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(format!("{REPO}/deploy/kubernetes/examples/secrets.yaml")).unwrap();
    documents(&text)
        .into_iter()
        .map(|s| {
            assert_eq!(s["kind"], "Secret");
            let data = s["stringData"]
                .as_mapping()
                .unwrap()
                .iter()
                .map(|(k, v)| (str_of(k).to_owned(), str_of(v).to_owned()))
                .collect();
            (str_of(&s["metadata"]["name"]).to_owned(), data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_deployment_starts_with_the_rendered_environment_after_the_migrate_job() {
    let Some(objects) = render() else { return };
    let runbooks = tempfile::tempdir().unwrap();
    // For its NATS server, database names (dropped at the end) and its turn.
    let d = Deployment::new(runbooks.path(), "").await;
    let root = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        objects: &objects,
        secrets: example_secrets(),
        root: root.path().to_owned(),
        database_url: format!("{}/{}_{{service}}", d.pg_server, d.prefix),
        nats_url: d.nats.url(),
        ports: SERVICES
            .into_iter()
            .map(|s| (s, (free_port(), free_port())))
            .collect(),
    };

    // Before the migrate Job has run, a service is live and waits, saying for what.
    let mut intake = cluster.start("intake");
    assert_eq!(grpc_health(intake.grpc, "intake.live").await, "SERVING");
    let port = intake.http;
    let waiting = eventually("intake to wait for the migrate Job", 30, || async move {
        tokio::task::spawn_blocking(move || http_get(port, "/readyz"))
            .await
            .unwrap()
            .filter(|(code, body)| *code == 503 && body.contains("firebreak migrate"))
    })
    .await;
    assert!(waiting.1.contains("intake database"), "{}", waiting.1);
    assert_eq!(grpc_health(intake.grpc, "intake").await, "NOT_SERVING");
    assert_eq!(http_get(intake.http, "/livez").map(|r| r.0), Some(200));

    let migrated = cluster.migrate();
    for s in SERVICES {
        assert!(
            migrated.contains(&format!("{s}: migrated from schema version 0 to ")),
            "{migrated}"
        );
    }

    let mut pods = vec![];
    for s in ["notification", "triage", "orchestration"] {
        pods.push(cluster.start(s));
    }
    for pod in pods.iter_mut().chain([&mut intake]) {
        let service = pod.name.trim_end_matches("-0").to_owned();
        let (grpc, http) = (pod.grpc, pod.http);
        // Ready within a minute; a pod that exits (a Secret's file missing, say) fails at
        // once, with its log.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = tokio::task::spawn_blocking(move || http_get(http, "/readyz"))
                .await
                .unwrap()
                .is_some_and(|(code, _)| code == 200);
            if ready && grpc_health(grpc, &service).await == "SERVING" {
                break;
            }
            assert!(pod.alive(), "{} exited:\n{}", pod.name, pod.log());
            assert!(
                Instant::now() < deadline,
                "{} was not ready within 60 s:\n{}",
                pod.name,
                pod.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(pod.alive(), "{} restarted:\n{}", pod.name, pod.log());
        let service = pod.name.trim_end_matches("-0");
        assert_eq!(grpc_health(grpc, "").await, "SERVING");
        assert_eq!(
            grpc_health(grpc, &format!("{service}.live")).await,
            "SERVING"
        );
        for other in SERVICES.iter().filter(|o| **o != service) {
            assert_eq!(grpc_health(grpc, other).await, "NOT_FOUND", "{service}");
        }
        // The service links were there and taken for what they are.
        assert!(
            !pod.log().contains("ignoring an environment variable"),
            "{}",
            pod.log()
        );
    }

    // The chart's wiring carries an incident: intake (the example admin token) → triage.
    let admin = &cluster.secrets["firebreak-auth"]["admin-token"];
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", intake.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = v1::intake_service_client::IntakeServiceClient::new(
        firebreak_proto::access::authed(channel, Some(admin)),
    );
    let raised = client
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(v1::AlertInput {
                title: "checkout down in the cluster".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!raised.incident_id.is_empty(), "{raised:?}");

    // The integration whose key is a file of the firebreak-secrets Secret takes alerts with
    // that key, and no other.
    let key = cluster.secrets["firebreak-secrets"]["alertmanager-key"].clone();
    let alert = r#"{"version": "4", "groupKey": "{}:{alertname=\"KubeQuotaExceeded\"}", "status": "firing",
        "alerts": [{"status": "firing", "labels": {"alertname": "KubeQuotaExceeded", "severity": "warning"},
        "annotations": {"summary": "quota exceeded"}}]}"#;
    let port = intake.http;
    let posted = tokio::task::spawn_blocking(move || {
        [
            http_post(
                port,
                "/v1/webhooks/alertmanager/not-the-cluster-key-000",
                alert,
            ),
            http_post(port, &format!("/v1/webhooks/alertmanager/{key}"), alert),
        ]
    });
    assert_eq!(posted.await.unwrap(), [Some(401), Some(200)]);

    // A second run of the Job finds nothing to do.
    let again = cluster.migrate();
    for s in SERVICES {
        assert!(again.contains(&format!("{s}: up to date")), "{again}");
    }
}

#[test]
fn retiring_the_admin_token_drops_its_file_from_the_services_and_nothing_else() {
    let Some(production) = render() else { return };
    // An overlay of the production overlay with the patch its kustomization.yaml offers
    // (kustomize takes a relative path only).
    let dir = tempfile::tempdir().unwrap();
    let overlay = format!("{REPO}/deploy/kubernetes/overlays/production");
    let overlay = std::fs::canonicalize(overlay).unwrap();
    let here = std::fs::canonicalize(dir.path()).unwrap();
    let up = "../".repeat(here.components().count() - 1);
    let relative = format!("{up}{}", overlay.strip_prefix("/").unwrap().display());
    std::fs::copy(
        overlay.join("without-admin-token.yaml"),
        here.join("without-admin-token.yaml"),
    )
    .unwrap();
    std::fs::write(
        here.join("kustomization.yaml"),
        format!(
            "resources:\n  - {relative}\npatches:\n  - path: without-admin-token.yaml\n    target:\n      kind: Deployment\n"
        ),
    )
    .unwrap();
    let Some(retired) = render_dir(&here) else {
        return;
    };
    let offered = std::fs::read_to_string(overlay.join("kustomization.yaml")).unwrap();
    assert!(
        offered.contains(
            "#   - path: without-admin-token.yaml\n#     target:\n#       kind: Deployment"
        ),
        "{offered}"
    );

    assert_eq!(retired.len(), production.len());
    let mut changed = 0;
    for (before, after) in production.iter().zip(&retired) {
        if before == after {
            continue;
        }
        changed += 1;
        assert_eq!(after["kind"], "Deployment", "{after:?}");
        let vars = |o: &Value| -> Vec<String> {
            container(o)["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|e| str_of(&e["name"]).to_owned())
                .collect()
        };
        let mut want = vars(before);
        want.retain(|v| v != "FIREBREAK_AUTH__ADMIN_TOKEN_FILE");
        assert_eq!(want.len() + 1, vars(before).len());
        assert_eq!(vars(after), want);
        // Nothing but that variable.
        let mut before = before.clone();
        before["spec"]["template"]["spec"]["containers"][0]["env"] =
            after["spec"]["template"]["spec"]["containers"][0]["env"].clone();
        assert_eq!(&before, after);
    }
    assert_eq!(changed, 4);
}

#[test]
fn serve_without_ca_certificates_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("firebreak.yaml");
    std::fs::write(
        &config,
        "database_url: postgres://nobody@127.0.0.1:1/firebreak_{service}\nnats:\n  url: nats://127.0.0.1:1\npeers:\n  notification: http://127.0.0.1:1\nauth:\n  service_token: fb_5e5e5e5e5e5e_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    for service in ["orchestration", "notification"] {
        let out = Command::new(BIN)
            .args(["serve", service, "--no-migrate", "--config"])
            .arg(&config)
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            // As in an image without ca-certificates: no certificate anywhere.
            .env("SSL_CERT_FILE", dir.path().join("none.pem"))
            .env("SSL_CERT_DIR", dir.path().join("none"))
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{service} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no CA certificates") && stderr.contains("ca-certificates package"),
            "{service}: {stderr}"
        );
    }
}

#[test]
fn the_image_build_leaves_out_target_and_git_and_runs_as_a_numeric_user() {
    let containerfile = std::fs::read_to_string(format!("{REPO}/deploy/Containerfile")).unwrap();
    let ignore = std::fs::read_to_string(format!("{REPO}/.containerignore")).unwrap();
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target", ".git"] {
        assert!(
            patterns
                .iter()
                .any(|p| p.trim_matches('/') == needed || *p == format!("{needed}/")),
            "{needed} is not in .containerignore: {patterns:?}"
        );
    }
    // Docker reads .dockerignore: the same file.
    let docker = std::fs::read_to_string(format!("{REPO}/.dockerignore")).unwrap();
    assert_eq!(docker, ignore);

    let lines: Vec<&str> = containerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    // The final stage runs as a numeric user (runAsNonRoot can check only a number) with
    // CA certificates installed.
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let last = &lines[last_from..];
    let user = last
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert_eq!(uid.parse::<u32>().ok(), Some(10001), "USER {user}");
    assert!(
        last.iter().any(|l| l.contains("ca-certificates")),
        "no ca-certificates in the final stage"
    );
    // Dependencies are built in a layer of their own, from the manifests alone, before the
    // sources are copied in.
    let first_source_copy = lines
        .iter()
        .position(|l| l.starts_with("COPY crates ") || l.starts_with("COPY . "))
        .expect("the sources are copied");
    let cached = lines[..first_source_copy]
        .iter()
        .any(|l| l.starts_with("RUN") && l.contains("cargo build"));
    assert!(cached, "no dependency build before the sources are copied");
    // Every workspace member's manifest is in that layer.
    let mut members: Vec<String> = std::fs::read_dir(format!("{REPO}/crates"))
        .unwrap()
        .map(|e| {
            format!(
                "crates/{}/Cargo.toml",
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    members.push("tests/Cargo.toml".into());
    for m in members {
        assert!(
            lines[..first_source_copy]
                .iter()
                .any(|l| l.starts_with(&format!("COPY {m} "))),
            "the dependency layer does not copy {m}"
        );
    }
    for l in &lines {
        assert!(
            !(l.starts_with("FROM ") && l.contains(":latest")),
            "an unpinned base image: {l}"
        );
    }
}

#[test]
fn migrate_names_what_is_missing_or_unreachable_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = |env: &[(&str, &str)], args: &[&str]| {
        let out = Command::new(BIN)
            .arg("migrate")
            .args(args)
            .env_remove("FIREBREAK_DATABASE_URL")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = migrate(&[], &[]);
    assert!(err.contains("database_url"), "{err}");
    // Nothing listens on port 1: the service and the server are named, not the password.
    let err = migrate(
        &[(
            "FIREBREAK_DATABASE_URL",
            "postgres://firebreak:s3cret-pw@127.0.0.1:1/firebreak_{service}",
        )],
        &["triage"],
    );
    assert!(
        err.contains(
            "migrating the triage database postgres://firebreak@127.0.0.1:1/firebreak_triage"
        ),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    let err = migrate(&[], &["billing"]);
    assert!(err.contains("invalid value 'billing'"), "{err}");
}
