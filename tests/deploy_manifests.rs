//! Every manifest in deploy/ and examples/ parses into its k8s-openapi type and back without
//! losing a field (a misspelt field would be dropped, and fail here), and kustomization.yaml
//! lists exactly the files in deploy/. The DaemonSet keeps what running as a hostNetwork
//! ingress needs.

mod support;

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::fake_api::yaml_values;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The YAML files under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Decodes into `T`, encodes again, and checks nothing written was lost.
fn round_trip<T: DeserializeOwned + Serialize>(file: &Path, doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{}: {e}\n{doc:#}", file.display()));
    let back = serde_json::to_value(&typed).unwrap();
    assert_subset(doc, &back, &format!("{}:", file.display()));
}

/// Every value in `written` is in `parsed`.
fn assert_subset(written: &Value, parsed: &Value, at: &str) {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => {
            for (k, v) in w {
                let got = p
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} is not a known field"));
                assert_subset(v, got, &format!("{at}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(p)) => {
            assert_eq!(w.len(), p.len(), "{at}");
            for (i, (w, p)) in w.iter().zip(p).enumerate() {
                assert_subset(w, p, &format!("{at}[{i}]"));
            }
        }
        (w, p) => assert_eq!(w, p, "{at}"),
    }
}

fn check(file: &Path, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap_or_default();
    match kind {
        "Namespace" => round_trip::<Namespace>(file, doc),
        "ServiceAccount" => round_trip::<ServiceAccount>(file, doc),
        "ClusterRole" => round_trip::<ClusterRole>(file, doc),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(file, doc),
        "Role" => round_trip::<Role>(file, doc),
        "RoleBinding" => round_trip::<RoleBinding>(file, doc),
        "IngressClass" => round_trip::<IngressClass>(file, doc),
        "Ingress" => round_trip::<Ingress>(file, doc),
        "DaemonSet" => round_trip::<DaemonSet>(file, doc),
        "Deployment" => round_trip::<Deployment>(file, doc),
        "Service" => round_trip::<Service>(file, doc),
        "Secret" => round_trip::<Secret>(file, doc),
        "ConfigMap" => round_trip::<k8s_openapi::api::core::v1::ConfigMap>(file, doc),
        "EndpointSlice" => round_trip::<EndpointSlice>(file, doc),
        other => panic!("{}: unexpected kind {other:?}", file.display()),
    }
}

#[test]
fn every_manifest_parses_into_its_type() {
    let mut count = 0;
    for dir in ["deploy", "examples"] {
        for file in yaml_files(&root().join(dir)) {
            if file.ends_with("kustomization.yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in yaml_values(&text) {
                check(&file, &doc);
                count += 1;
            }
        }
    }
    assert!(count >= 20, "only {count} documents found");
}

#[test]
fn kustomization_lists_every_deploy_file() {
    let dir = root().join("deploy");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let k = &yaml_values(&text)[0];
    assert_eq!(k["kind"], "Kustomization");
    let listed: Vec<PathBuf> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dir.join(r.as_str().unwrap()))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    let files: Vec<PathBuf> = yaml_files(&dir)
        .into_iter()
        .filter(|f| !f.ends_with("kustomization.yaml"))
        .collect();
    assert_eq!(
        sorted, files,
        "resources must name exactly the files in deploy/"
    );
}

fn daemonset() -> DaemonSet {
    let text = std::fs::read_to_string(root().join("deploy/daemonset.yaml")).unwrap();
    serde_json::from_value(yaml_values(&text).remove(0)).unwrap()
}

#[test]
fn the_daemonset_runs_on_the_host_network_of_labelled_nodes() {
    let ds = daemonset();
    let pod = ds.spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    let selector = pod.node_selector.unwrap();
    assert_eq!(selector.get("ingress").map(String::as_str), Some("true"));
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert!(
        args.contains(&"--admin-addr=0.0.0.0:10254".to_string()),
        "{args:?}"
    );
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [80, 443, 10254]);
    let host_ports: Vec<Option<i32>> = c.ports.iter().flatten().map(|p| p.host_port).collect();
    assert_eq!(
        host_ports,
        [Some(80), Some(443), None],
        "the admin needs no hostPort (hostNetwork puts it on the node already)"
    );
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone()
    };
    assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_downward_api(c);
    let resources = c.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_BIND_SERVICE".to_string()][..])
    );
}

fn assert_downward_api(c: &k8s_openapi::api::core::v1::Container) {
    let env: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .map(|e| {
            let field = e.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
            (e.name.clone(), field.field_path.clone())
        })
        .collect();
    for (name, path) in [
        ("NODE_NAME", "spec.nodeName"),
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            env.contains(&(name.into(), path.into())),
            "{name} in {env:?}"
        );
    }
}

#[test]
fn the_pods_carry_the_label_the_status_writer_selects() {
    let labels = daemonset().spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some("portico"),
        "--status-pod-selector defaults to app.kubernetes.io/name=portico"
    );
}

/// The ConfigMap the DaemonSet names exists, and the Role lets Portico read and watch it (and
/// only it).
#[test]
fn the_configmap_flag_names_the_shipped_configmap_and_rbac_allows_it() {
    let spec = daemonset().spec.template.spec.unwrap();
    let c = &spec.containers[0];
    let flag = c
        .args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix("--configmap="))
        .expect("--configmap in the DaemonSet");
    assert_eq!(flag, "portico/portico");
    let text = std::fs::read_to_string(root().join("deploy/configmap.yaml")).unwrap();
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(yaml_values(&text).remove(0)).unwrap();
    assert_eq!(cm.metadata.namespace.as_deref(), Some("portico"));
    assert_eq!(cm.metadata.name.as_deref(), Some("portico"));
    let text = std::fs::read_to_string(root().join("deploy/rbac.yaml")).unwrap();
    let role = yaml_values(&text)
        .into_iter()
        .find(|d| d["kind"] == "Role")
        .unwrap();
    let role: Role = serde_json::from_value(role).unwrap();
    let rule = role
        .rules
        .iter()
        .flatten()
        .find(|r| r.resources.iter().flatten().any(|x| x == "configmaps"))
        .expect("a rule for configmaps");
    // ConfigMaps of the controller's namespace only: a Role, not a ClusterRole.
    assert_eq!(role.metadata.namespace.as_deref(), Some("portico"));
    assert_eq!(rule.resource_names, None);
    for verb in ["get", "list", "watch"] {
        assert!(rule.verbs.contains(&verb.to_string()), "{verb}");
    }
}
