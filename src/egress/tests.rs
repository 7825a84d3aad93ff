//! The address classifier (a table and properties), the local-address test, and `connect`
//! refusing loopback names. Nothing here connects to anything but loopback: a UDP connect
//! sends no packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn classify_table() {
    use Refusal::*;
    let cases: &[(&str, Option<Refusal>)] = &[
        ("127.0.0.1", Some(Loopback)),
        ("127.255.255.254", Some(Loopback)),
        ("127.0.1.1", Some(Loopback)),
        ("0.0.0.0", Some(Unspecified)),
        ("0.1.2.3", Some(Unspecified)),
        ("169.254.169.254", Some(LinkLocal)),
        ("169.254.0.1", Some(LinkLocal)),
        ("100.100.100.200", Some(Metadata)),
        ("::1", Some(Loopback)),
        ("::", Some(Unspecified)),
        ("fe80::1", Some(LinkLocal)),
        ("febf:ffff::1", Some(LinkLocal)),
        ("fd00:ec2::254", Some(Metadata)),
        ("fd20:ce::254", Some(Metadata)),
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::ffff:169.254.169.254", Some(LinkLocal)),
        ("::ffff:0.0.0.0", Some(Unspecified)),
        ("::127.0.0.1", Some(Loopback)),
        // Allowed: public, private and shared addresses (cluster networks, other hosts).
        ("8.8.8.8", None),
        ("10.96.0.1", None),
        ("192.168.1.1", None),
        ("172.16.0.1", None),
        ("100.64.0.1", None),
        ("169.253.255.255", None),
        ("169.255.0.1", None),
        ("128.0.0.1", None),
        ("1.0.0.1", None),
        ("2001:4860:4860::8888", None),
        ("fd00::1", None),
        ("fec0::1", None),
        ("fe7f::1", None),
        ("fec0::", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
    ];
    for &(addr, want) in cases {
        assert_eq!(classify(ip(addr)), want, "{addr}");
    }
}

#[test]
fn literal_names_the_build_can_judge() {
    use Refusal::*;
    let cases: &[(&str, Option<Refusal>)] = &[
        ("localhost", Some(Loopback)),
        ("LOCALHOST.", Some(Loopback)),
        ("admin.localhost", Some(Loopback)),
        ("127.0.0.1", Some(Loopback)),
        ("[::1]", Some(Loopback)),
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("169.254.169.254", Some(LinkLocal)),
        ("0.0.0.0", Some(Unspecified)),
        ("localhost.example.com", None),
        ("notlocalhost", None),
        ("api.example.org", None),
        ("8.8.8.8", None),
        // Resolved only at connect time (getaddrinfo's inet_aton forms).
        ("127.1", None),
    ];
    for &(name, want) in cases {
        assert_eq!(literal_refusal(name), want, "{name}");
    }
}

#[test]
fn this_hosts_addresses_are_local() {
    assert!(is_local_address(ip("127.0.0.1")).unwrap());
    // A documentation address is nobody's here: the route to it has another source.
    assert!(!is_local_address(ip("198.51.100.7")).unwrap_or(false));
    // The address this host would send from towards another host is this host's own.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    if probe.connect("198.51.100.7:9").is_ok() {
        let own = probe.local_addr().unwrap().ip();
        assert!(is_local_address(own).unwrap(), "{own}");
        assert!(matches!(
            check(own),
            Err(CheckError::Refused(Refusal::Local))
        ));
        let mapped = match own {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        };
        assert!(matches!(
            check(mapped),
            Err(CheckError::Refused(Refusal::Local))
        ));
    }
}

#[tokio::test]
async fn connect_refuses_names_of_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    for name in ["localhost", "127.0.0.1", "127.1", "::ffff:127.0.0.1"] {
        match connect(name, port).await {
            Err(EgressError::Refused(refused)) => {
                assert_eq!(&*refused.name, name);
                assert!(refused.address.to_canonical().is_loopback(), "{refused}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let pending = tokio::time::timeout(std::time::Duration::from_millis(50), listener.accept());
    assert!(pending.await.is_err(), "nothing connected");
}

proptest! {
    /// An IPv4 address and its mapped and compatible IPv6 forms are judged alike.
    #[test]
    fn mapped_forms_are_judged_like_ipv4(bits: u32) {
        let v4 = Ipv4Addr::from(bits);
        let want = classify(IpAddr::V4(v4));
        prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), want);
        // `::` and `::1` are loopback and unspecified in their own right.
        if bits > 1 {
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_compatible())), want);
        }
    }

    /// The refused IPv4 ranges, whatever the host part.
    #[test]
    fn refused_ranges(host: u32, low: u16) {
        let [_, b, c, d] = host.to_be_bytes();
        prop_assert_eq!(classify(Ipv4Addr::new(127, b, c, d).into()), Some(Refusal::Loopback));
        prop_assert_eq!(classify(Ipv4Addr::new(0, b, c, d).into()), Some(Refusal::Unspecified));
        let [e, f] = low.to_be_bytes();
        prop_assert_eq!(classify(Ipv4Addr::new(169, 254, e, f).into()), Some(Refusal::LinkLocal));
        let link_local = Ipv6Addr::from((0xfe80u128 << 112) | u128::from(host));
        prop_assert_eq!(classify(link_local.into()), Some(Refusal::LinkLocal));
    }
}
