//! Package URLs (`pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`), as the purl specification
//! spells them: each segment percent-encoded, qualifiers sorted by key.

/// `s` percent-encoded: everything but letters, digits and `.-_~` (and `:` in versions, which
/// the specification leaves as it is: Debian's epochs).
fn encode(s: &str, keep_colon: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_colon && b == b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A package URL.
pub fn make(
    kind: &str,
    namespace: &[&str],
    name: &str,
    version: Option<&str>,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut s = format!("pkg:{kind}/");
    for ns in namespace.iter().filter(|n| !n.is_empty()) {
        s.push_str(&encode(ns, false));
        s.push('/');
    }
    s.push_str(&encode(name, false));
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        s.push('@');
        s.push_str(&encode(v, true));
    }
    let mut q: Vec<&(&str, &str)> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&encode(v, true));
    }
    s
}

/// `pkg:deb/debian/NAME@VERSION?arch=…&distro=debian-12`.
pub fn deb(
    distro: &str,
    name: &str,
    version: &str,
    arch: &str,
    distro_version: Option<&str>,
    upstream: Option<&str>,
) -> String {
    let d = distro_version.map(|v| format!("{distro}-{v}"));
    make(
        "deb",
        &[distro],
        name,
        Some(version),
        &[
            ("arch", arch),
            ("distro", d.as_deref().unwrap_or("")),
            ("upstream", upstream.unwrap_or("")),
        ],
    )
}

/// `pkg:apk/alpine/NAME@VERSION?arch=…&distro=alpine-3.19.1`.
pub fn apk(
    distro: &str,
    name: &str,
    version: &str,
    arch: &str,
    distro_version: Option<&str>,
) -> String {
    let d = distro_version.map(|v| format!("{distro}-{v}"));
    make(
        "apk",
        &[distro],
        name,
        Some(version),
        &[("arch", arch), ("distro", d.as_deref().unwrap_or(""))],
    )
}

/// `pkg:pypi/NAME@VERSION`, the name lowercased with `_` as `-` (the specification's rule).
pub fn pypi(name: &str, version: &str) -> String {
    make(
        "pypi",
        &[],
        &name.to_ascii_lowercase().replace('_', "-"),
        Some(version),
        &[],
    )
}

/// `pkg:npm/%40SCOPE/NAME@VERSION`.
pub fn npm(name: &str, version: &str) -> String {
    match name.split_once('/').filter(|(s, _)| s.starts_with('@')) {
        Some((scope, n)) => make("npm", &[scope], n, Some(version), &[]),
        None => make("npm", &[], name, Some(version), &[]),
    }
}

/// `pkg:golang/HOST/PATH/NAME@VERSION`: the module path's last element is the name.
pub fn golang(module: &str, version: Option<&str>) -> String {
    let parts: Vec<&str> = module.split('/').filter(|p| !p.is_empty()).collect();
    match parts.split_last() {
        Some((name, ns)) => make("golang", ns, name, version, &[]),
        None => make("golang", &[], module, version, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_as_the_specification_says() {
        assert_eq!(
            deb(
                "debian",
                "libc6",
                "2.36-9+deb12u4",
                "amd64",
                Some("12"),
                Some("glibc")
            ),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"
        );
        assert_eq!(
            deb("debian", "perl-base", "1:5.36.0-7", "amd64", None, None),
            "pkg:deb/debian/perl-base@1:5.36.0-7?arch=amd64"
        );
        assert_eq!(
            pypi("Typing_Extensions", "4.12.2"),
            "pkg:pypi/typing-extensions@4.12.2"
        );
        assert_eq!(npm("@types/node", "20.1.0"), "pkg:npm/%40types/node@20.1.0");
        assert_eq!(npm("ms", "2.1.3"), "pkg:npm/ms@2.1.3");
        assert_eq!(
            golang("github.com/pkg/errors", Some("v0.9.1")),
            "pkg:golang/github.com/pkg/errors@v0.9.1"
        );
        assert_eq!(
            golang("example.com/hello", None),
            "pkg:golang/example.com/hello"
        );
        assert_eq!(
            apk("alpine", "musl", "1.2.4-r2", "x86_64", Some("3.19.1")),
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"
        );
    }
}
