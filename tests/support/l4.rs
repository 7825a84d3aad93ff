//! Manifests for the L4 tests: NodePort Services, one EndpointSlice per backend, and a port
//! free for both TCP and UDP (the one-port NodePort range).

use std::net::SocketAddr;

/// A port free for both TCP and UDP right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A NodePort Service `name` in namespace `l4` with port 7000.
pub fn service(name: &str, protocol: &str) -> String {
    service_with(name, protocol, "{}")
}

/// The same with annotations (a YAML flow mapping).
pub fn service_with(name: &str, protocol: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: l4, annotations: {annotations}}}\nspec:\n  type: NodePort\n  ports: [{{port: 7000, protocol: {protocol}}}]\n"
    )
}

/// One slice per backend; `ready` per backend.
pub fn slices(service: &str, protocol: &str, backends: &[(SocketAddr, bool)]) -> String {
    backends
        .iter()
        .enumerate()
        .map(|(i, (addr, ready))| {
            format!("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-{i}, namespace: l4, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{port: {}, protocol: {protocol}}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: {ready}}}}}]\n", addr.port(), addr.ip())
        })
        .collect()
}
