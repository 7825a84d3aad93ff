//! Manifests for the L4 tests: NodePort Services, one EndpointSlice per backend, and a port
//! free for both TCP and UDP (the one-port NodePort range).

use std::net::SocketAddr;

/// A port free for both TCP and UDP right now.
/// A NodePort for a test: a loopback address of its own (other tests bind 127.0.0.1, so a port
/// freed here cannot be taken by them before Portico binds it) and a port free on it for TCP and
/// UDP.
pub fn free_node() -> std::net::SocketAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pid = std::process::id();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::new(
        127,
        (201 + pid % 50) as u8,
        ((pid / 50) % 250 + 1) as u8,
        (n % 250 + 1) as u8,
    );
    loop {
        let tcp = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return std::net::SocketAddr::from((ip, port));
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
