//! Which Ingresses are ours.

use super::*;

fn rules() -> Value {
    json!([rule("h.com", &[("/", "Prefix", "s", 80)])])
}

fn with_class_name(class: &str) -> Object {
    ing("i", json!({"ingressClassName": class, "rules": rules()}))
}

fn without_class(annotation: Option<&str>) -> Object {
    let Object::Ingress(i) = ing("i", json!({"rules": rules()})) else {
        unreachable!()
    };
    let mut i = (*i).clone();
    if let Some(spec) = i.spec.as_mut() {
        spec.ingress_class_name = None;
    }
    if let Some(a) = annotation {
        i.metadata.annotations =
            Some([("kubernetes.io/ingress.class".to_string(), a.to_string())].into());
    }
    Object::Ingress(Arc::new(i))
}

fn is_served(config: &BuildConfig, objects: Vec<Object>) -> bool {
    let mut objects = objects;
    objects.push(svc("s"));
    build_with(config, objects)
        .snapshot
        .routes
        .route("h.com", "/")
        .is_some()
}

#[test]
fn class_selection() {
    let c = config();
    let mut without_class_flag = config();
    without_class_flag.watch_ingress_without_class = true;
    let mut custom = config();
    custom.ingress_class = "internal".to_string();
    let other = || class("nginx", "k8s.io/ingress-nginx", false);
    // `--controller-class portico.dev/ingress-controller,k8s.io/ingress-nginx`.
    let mut beside = config();
    beside
        .controller_classes
        .push("k8s.io/ingress-nginx".to_string());
    let cases: Vec<(&str, &BuildConfig, Vec<Object>, bool)> = vec![
        (
            "ingressClassName names our class",
            &c,
            vec![our_class(), with_class_name("portico")],
            true,
        ),
        (
            "ingressClassName names another controller's class",
            &c,
            vec![our_class(), other(), with_class_name("nginx")],
            false,
        ),
        (
            "ingressClassName names a missing class",
            &c,
            vec![with_class_name("portico")],
            false,
        ),
        (
            "our class under another name",
            &c,
            vec![
                class("edge", CONTROLLER_NAME, false),
                with_class_name("edge"),
            ],
            true,
        ),
        (
            "annotation equals --ingress-class",
            &c,
            vec![without_class(Some("portico"))],
            true,
        ),
        (
            "annotation equals a custom --ingress-class",
            &custom,
            vec![without_class(Some("internal"))],
            true,
        ),
        (
            "annotation names our IngressClass",
            &c,
            vec![
                class("edge", CONTROLLER_NAME, false),
                without_class(Some("edge")),
            ],
            true,
        ),
        (
            "--controller-class takes ingress-nginx's class",
            &beside,
            vec![our_class(), other(), with_class_name("nginx")],
            true,
        ),
        (
            "--controller-class: the annotation naming that class",
            &beside,
            vec![other(), without_class(Some("nginx"))],
            true,
        ),
        (
            "--controller-class: its default class takes class-less Ingresses",
            &beside,
            vec![
                class("nginx", "k8s.io/ingress-nginx", true),
                without_class(None),
            ],
            true,
        ),
        (
            "annotation names another class",
            &c,
            vec![our_class(), other(), without_class(Some("nginx"))],
            false,
        ),
        (
            "no class, no default class",
            &c,
            vec![our_class(), without_class(None)],
            false,
        ),
        (
            "no class, our class is the default",
            &c,
            vec![class("portico", CONTROLLER_NAME, true), without_class(None)],
            true,
        ),
        (
            "no class, another controller's default",
            &c,
            vec![
                our_class(),
                class("nginx", "k8s.io/ingress-nginx", true),
                without_class(None),
            ],
            false,
        ),
        (
            "no class, --watch-ingress-without-class",
            &without_class_flag,
            vec![without_class(None)],
            true,
        ),
        (
            "flag does not take other classes",
            &without_class_flag,
            vec![other(), with_class_name("nginx")],
            false,
        ),
    ];
    for (name, config, objects, want) in cases {
        assert_eq!(is_served(config, objects), want, "{name}");
    }
}

#[test]
fn missing_own_class_is_a_warning() {
    let built = build_of(vec![svc("s"), with_class_name("portico")]);
    let d = diags(&built, "IngressClass \"portico\" does not exist");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].severity, Severity::Warning);
}
