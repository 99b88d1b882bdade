//! Declared licenses as SPDX expressions: SPDX identifiers where the package's metadata names
//! one (directly, or by a name this module knows: Debian's DEP-5 short names, Python's trove
//! classifiers and common spellings), and `LicenseRef-…` for anything else, with the name as
//! found kept as its text. Every expression this module makes parses as SPDX 2.3 and uses only
//! identifiers of the SPDX license list.

use std::collections::BTreeMap;

use super::License;

/// SPDX license identifiers that package metadata uses (a subset of the SPDX license list;
/// a name not here becomes a `LicenseRef`, never a wrong identifier).
const IDS: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "AFL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.0",
    "Apache-1.1",
    "Apache-2.0",
    "APSL-2.0",
    "Artistic-1.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "Beerware",
    "BlueOak-1.0.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-2-Clause-Patent",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSD-4-Clause",
    "BSD-Source-Code",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "CDDL-1.1",
    "CECILL-2.1",
    "CPL-1.0",
    "curl",
    "ECL-2.0",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.1",
    "EUPL-1.2",
    "FSFAP",
    "FSFUL",
    "FSFULLR",
    "FTL",
    "GFDL-1.1-only",
    "GFDL-1.1-or-later",
    "GFDL-1.2-only",
    "GFDL-1.2-or-later",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-only",
    "GPL-1.0-or-later",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "HPND",
    "ICU",
    "IJG",
    "Info-ZIP",
    "IPL-1.0",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "libpng-2.0",
    "libtiff",
    "LPPL-1.3c",
    "MIT",
    "MIT-0",
    "MIT-CMU",
    "MPL-1.0",
    "MPL-1.1",
    "MPL-2.0",
    "MPL-2.0-no-copyleft-exception",
    "MS-PL",
    "MS-RL",
    "NCSA",
    "OFL-1.1",
    "OLDAP-2.8",
    "OpenSSL",
    "OSL-3.0",
    "PHP-3.01",
    "PostgreSQL",
    "PSF-2.0",
    "Python-2.0",
    "Python-2.0.1",
    "Ruby",
    "Sleepycat",
    "SSPL-1.0",
    "TCL",
    "Unicode-DFS-2016",
    "Unlicense",
    "UPL-1.0",
    "Vim",
    "W3C",
    "WTFPL",
    "X11",
    "Zlib",
    "zlib-acknowledgement",
    "ZPL-2.0",
    "ZPL-2.1",
];

/// SPDX license exception identifiers (after `WITH`).
const EXCEPTIONS: &[&str] = &[
    "389-exception",
    "Autoconf-exception-2.0",
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "eCos-exception-2.0",
    "FLTK-exception",
    "Font-exception-2.0",
    "GCC-exception-2.0",
    "GCC-exception-3.1",
    "Libtool-exception",
    "Linux-syscall-note",
    "LLVM-exception",
    "OCaml-LGPL-linking-exception",
    "OpenJDK-assembly-exception-1.0",
    "Qt-LGPL-exception-1.1",
    "u-boot-exception-2.0",
    "WxWindows-exception-3.1",
];

/// Names in use for SPDX licenses: DEP-5 short names, deprecated SPDX forms, common spellings
/// in Python and npm metadata. Matched without regard to case.
const ALIASES: &[(&str, &str)] = &[
    ("GPL-1", "GPL-1.0-only"),
    ("GPL-1+", "GPL-1.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-3", "GPL-3.0-only"),
    ("GPL-3+", "GPL-3.0-or-later"),
    ("GPL-2.0", "GPL-2.0-only"),
    ("GPL-2.0+", "GPL-2.0-or-later"),
    ("GPL-3.0", "GPL-3.0-only"),
    ("GPL-3.0+", "GPL-3.0-or-later"),
    ("GPLv2", "GPL-2.0-only"),
    ("GPLv2+", "GPL-2.0-or-later"),
    ("GPLv3", "GPL-3.0-only"),
    ("GPLv3+", "GPL-3.0-or-later"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("LGPL-2+", "LGPL-2.0-or-later"),
    ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-3", "LGPL-3.0-only"),
    ("LGPL-3+", "LGPL-3.0-or-later"),
    ("LGPL-3.0", "LGPL-3.0-only"),
    ("LGPL-3.0+", "LGPL-3.0-or-later"),
    ("LGPLv2.1", "LGPL-2.1-only"),
    ("LGPLv3", "LGPL-3.0-only"),
    ("LGPLv3+", "LGPL-3.0-or-later"),
    ("AGPL-3", "AGPL-3.0-only"),
    ("AGPL-3+", "AGPL-3.0-or-later"),
    ("AGPL-3.0", "AGPL-3.0-only"),
    ("GFDL-1.2", "GFDL-1.2-only"),
    ("GFDL-1.2+", "GFDL-1.2-or-later"),
    ("GFDL-1.3", "GFDL-1.3-only"),
    ("GFDL-1.3+", "GFDL-1.3-or-later"),
    ("Expat", "MIT"),
    ("MIT License", "MIT"),
    ("The MIT License", "MIT"),
    ("BSD-2-clause", "BSD-2-Clause"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("BSD-4-clause", "BSD-4-Clause"),
    ("Apache-2", "Apache-2.0"),
    ("Apache 2", "Apache-2.0"),
    ("Apache 2.0", "Apache-2.0"),
    ("Apache License 2.0", "Apache-2.0"),
    ("Apache License, Version 2.0", "Apache-2.0"),
    ("Apache License Version 2.0", "Apache-2.0"),
    ("Apache Software License", "Apache-2.0"),
    ("Apache Software License 2.0", "Apache-2.0"),
    ("ASL 2.0", "Apache-2.0"),
    ("Artistic", "Artistic-1.0-Perl"),
    ("MPL 2.0", "MPL-2.0"),
    ("Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
    ("zlib/libpng", "Zlib"),
    ("CC0", "CC0-1.0"),
    ("PSF", "PSF-2.0"),
    ("PSF-2", "PSF-2.0"),
    ("PSF License", "PSF-2.0"),
    ("Python Software Foundation License", "PSF-2.0"),
    ("Boost-1.0", "BSL-1.0"),
    ("ISC License", "ISC"),
    ("ISC License (ISCL)", "ISC"),
    ("The Unlicense (Unlicense)", "Unlicense"),
];

/// Python's `License ::` trove classifiers (their last part) that name one SPDX license.
const CLASSIFIERS: &[(&str, &str)] = &[
    ("MIT License", "MIT"),
    ("MIT No Attribution License (MIT-0)", "MIT-0"),
    ("Apache Software License", "Apache-2.0"),
    ("Python Software Foundation License", "PSF-2.0"),
    ("GNU General Public License v2 (GPLv2)", "GPL-2.0-only"),
    (
        "GNU General Public License v2 or later (GPLv2+)",
        "GPL-2.0-or-later",
    ),
    ("GNU General Public License v3 (GPLv3)", "GPL-3.0-only"),
    (
        "GNU General Public License v3 or later (GPLv3+)",
        "GPL-3.0-or-later",
    ),
    (
        "GNU Lesser General Public License v2 (LGPLv2)",
        "LGPL-2.0-only",
    ),
    (
        "GNU Lesser General Public License v2 or later (LGPLv2+)",
        "LGPL-2.0-or-later",
    ),
    (
        "GNU Lesser General Public License v3 (LGPLv3)",
        "LGPL-3.0-only",
    ),
    (
        "GNU Lesser General Public License v3 or later (LGPLv3+)",
        "LGPL-3.0-or-later",
    ),
    ("GNU Affero General Public License v3", "AGPL-3.0-only"),
    (
        "GNU Affero General Public License v3 or later (AGPLv3+)",
        "AGPL-3.0-or-later",
    ),
    ("Mozilla Public License 1.1 (MPL 1.1)", "MPL-1.1"),
    ("Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
    ("ISC License (ISCL)", "ISC"),
    ("The Unlicense (Unlicense)", "Unlicense"),
    ("Boost Software License 1.0 (BSL-1.0)", "BSL-1.0"),
    ("zlib/libpng License", "Zlib"),
    ("Eclipse Public License 1.0 (EPL-1.0)", "EPL-1.0"),
    ("Eclipse Public License 2.0 (EPL-2.0)", "EPL-2.0"),
    ("European Union Public Licence 1.2 (EUPL 1.2)", "EUPL-1.2"),
    ("Universal Permissive License (UPL)", "UPL-1.0"),
    ("Zope Public License", "ZPL-2.1"),
    (
        "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication",
        "CC0-1.0",
    ),
    ("Academic Free License (AFL)", "AFL-3.0"),
];

/// The SPDX identifier `name` is (or stands for), in its canonical spelling.
pub fn spdx_id(name: &str) -> Option<&'static str> {
    let name = name.trim();
    IDS.iter()
        .find(|id| id.eq_ignore_ascii_case(name))
        .copied()
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(name))
                .map(|(_, id)| *id)
        })
}

fn exception_id(name: &str) -> Option<&'static str> {
    EXCEPTIONS
        .iter()
        .find(|id| id.eq_ignore_ascii_case(name))
        .copied()
}

/// Whether `id` is an SPDX license identifier of the list this module knows.
pub fn is_listed(id: &str) -> bool {
    IDS.contains(&id)
}

/// `LicenseRef-…` made of `text`: the characters SPDX allows (letters, digits, `.`, `-`).
pub fn ref_name(text: &str) -> String {
    let mut s = String::from("LicenseRef-");
    let mut dash = true;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            s.push(c);
            dash = false;
        } else if !dash {
            s.push('-');
            dash = true;
        }
        if s.len() >= 11 + 64 {
            break;
        }
    }
    while s.ends_with('-') && s.len() > 11 {
        s.pop();
    }
    if s.len() == 11 {
        s.push_str("unknown");
    }
    s
}

/// Makes a [`License`], collecting the `LicenseRef`s it names.
#[derive(Default)]
struct Builder {
    refs: BTreeMap<String, String>,
}

impl Builder {
    /// A `LicenseRef` for `text`, unique within this license.
    fn reference(&mut self, text: &str) -> String {
        let text = text.trim();
        let base = ref_name(text);
        let mut name = base.clone();
        let mut n = 2;
        while let Some(had) = self.refs.get(&name) {
            if had == text {
                return name;
            }
            name = format!("{base}-{n}");
            n += 1;
        }
        self.refs.insert(name.clone(), text.to_string());
        name
    }

    /// One license term: an SPDX identifier, or a reference to the name.
    fn term(&mut self, name: &str) -> String {
        match spdx_id(name) {
            Some(id) => id.to_string(),
            None => self.reference(name),
        }
    }

    fn done(self, expression: String) -> Option<License> {
        (!expression.is_empty()).then_some(License {
            expression,
            refs: self.refs,
        })
    }
}

/// The tokens of an SPDX expression: parentheses and words.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        if c == '(' || c == ')' || c.is_whitespace() {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
            if !c.is_whitespace() {
                out.push(&s[i..i + 1]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// `s` as an SPDX expression in canonical form, its unknown identifiers made references; None
/// when it is not an expression (then the caller takes it as one name).
fn expression(s: &str, b: &mut Builder) -> Option<String> {
    let toks = tokens(s);
    if toks.is_empty() || toks.len() > 64 {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let mut depth = 0i32;
    // Whether an operand is expected next (at the start, after an operator or '(').
    let mut want_operand = true;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        let upper = t.to_ascii_uppercase();
        match (t, upper.as_str()) {
            ("(", _) if want_operand => {
                depth += 1;
                out.push("(".into());
            }
            (")", _) if !want_operand && depth > 0 => {
                depth -= 1;
                out.push(")".into());
            }
            (_, "AND" | "OR") if !want_operand => {
                out.push(upper);
                want_operand = true;
            }
            (_, "WITH") => return None,
            _ if want_operand
                && t != "("
                && t != ")"
                && !matches!(upper.as_str(), "AND" | "OR") =>
            {
                if toks
                    .get(i + 1)
                    .is_some_and(|w| w.eq_ignore_ascii_case("WITH"))
                {
                    let exc = toks.get(i + 2)?;
                    match (spdx_id(t), exception_id(exc)) {
                        (Some(id), Some(e)) => out.push(format!("{id} WITH {e}")),
                        _ => out.push(b.reference(&format!("{t} WITH {exc}"))),
                    }
                    i += 2;
                } else if t.starts_with("LicenseRef-") || t.starts_with("DocumentRef-") {
                    out.push(b.reference(t));
                } else {
                    out.push(b.term(t));
                }
                want_operand = false;
            }
            _ => return None,
        }
        i += 1;
    }
    if want_operand || depth != 0 {
        return None;
    }
    Some(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// A license stated as an SPDX expression (PEP 639, npm, apk), or as a name when it does not
/// parse as one.
pub fn from_spdx(s: &str) -> Option<License> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut b = Builder::default();
    // A name with spaces that is an alias ("Apache License 2.0") is one license.
    let e = match spdx_id(s) {
        Some(id) => id.to_string(),
        None => match expression(s, &mut b) {
            Some(e) => e,
            None => {
                b = Builder::default();
                b.reference(s)
            }
        },
    };
    b.done(e)
}

/// `expression` with the references in `renamed` renamed (whole tokens: one name may be the
/// start of another).
pub(crate) fn rename(expression: &str, renamed: &BTreeMap<&str, String>) -> String {
    tokens(expression)
        .into_iter()
        .map(|t| renamed.get(t).map(String::as_str).unwrap_or(t))
        .collect::<Vec<_>>()
        .join(" ")
        .replace("( ", "(")
        .replace(" )", ")")
}

/// The references of many licenses made unique across them: each license's expression with
/// its references renamed where another license used the same name for another text, and all
/// the references (name, text).
pub(crate) fn unify<'a>(
    licenses: impl IntoIterator<Item = &'a License>,
) -> (Vec<String>, BTreeMap<String, String>) {
    let mut b = Builder::default();
    let mut out = Vec::new();
    for l in licenses {
        let mut renamed = BTreeMap::new();
        for (name, text) in &l.refs {
            renamed.insert(name.as_str(), b.reference(text));
        }
        out.push(rename(&l.expression, &renamed));
    }
    (out, b.refs)
}

/// Several licenses, each an SPDX expression or a name, joined by `op` (`AND`, `OR`).
fn joined(parts: &[String], op: &str, each: impl Fn(&str) -> Option<License>) -> Option<License> {
    let mut b = Builder::default();
    let mut exprs: Vec<String> = Vec::new();
    for p in parts {
        let Some(l) = each(p) else { continue };
        let mut renamed = BTreeMap::new();
        for (name, text) in &l.refs {
            renamed.insert(name.as_str(), b.reference(text));
        }
        let e = rename(&l.expression, &renamed);
        let e = if parts.len() > 1 && (e.contains(" AND ") || e.contains(" OR ")) {
            format!("({e})")
        } else {
            e
        };
        if !exprs.contains(&e) {
            exprs.push(e);
        }
    }
    b.done(exprs.join(&format!(" {op} ")))
}

/// A DEP-5 license field's value (`GPL-2+ or Artistic`, `GPL-2+ with OpenSSL exception`).
fn from_dep5(s: &str) -> Option<License> {
    let mut b = Builder::default();
    let words: Vec<&str> = s
        .split([' ', '\t', ','])
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut operand: Vec<&str> = Vec::new();
    let flush = |operand: &mut Vec<&str>, out: &mut Vec<String>, b: &mut Builder| {
        if operand.is_empty() {
            return;
        }
        let phrase = operand.join(" ");
        out.push(if operand.len() == 1 {
            b.term(&phrase)
        } else {
            b.reference(&phrase)
        });
        operand.clear();
    };
    for w in words {
        if w.eq_ignore_ascii_case("or") || w.eq_ignore_ascii_case("and") {
            flush(&mut operand, &mut out, &mut b);
            if !out.is_empty() && !matches!(out.last().map(String::as_str), Some("AND" | "OR")) {
                out.push(w.to_ascii_uppercase());
            }
        } else {
            operand.push(w);
        }
    }
    flush(&mut operand, &mut out, &mut b);
    while matches!(out.last().map(String::as_str), Some("AND" | "OR")) {
        out.pop();
    }
    b.done(out.join(" "))
}

/// A Debian package's license: the `License:` names of its DEP-5 copyright file, all of
/// which apply (to different files).
pub fn from_debian(names: &[String]) -> Option<License> {
    joined(names, "AND", from_dep5)
}

/// A Python distribution's license: PEP 639's expression; else a `License` field that names a
/// known license; else its license classifiers (several are a choice); else the field's name.
pub fn from_python(
    expression: Option<&str>,
    field: Option<&str>,
    classifiers: &[String],
) -> Option<License> {
    if let Some(e) = expression {
        return from_spdx(e);
    }
    if let Some(f) = field {
        if let Some(l) = from_spdx(f).filter(|l| l.refs.is_empty()) {
            return Some(l);
        }
    }
    let names: Vec<String> = classifiers
        .iter()
        .filter_map(|c| c.rsplit("::").next())
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty() && c != "OSI Approved")
        .collect();
    let known = |c: &str| {
        CLASSIFIERS
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, id)| License {
                expression: id.to_string(),
                refs: BTreeMap::new(),
            })
            .or_else(|| from_spdx(c))
    };
    if !names.is_empty() {
        return joined(&names, "OR", known);
    }
    field.and_then(from_spdx)
}

/// An npm package's license(s): an expression, or a legacy list (a choice).
pub fn from_npm(licenses: &[String]) -> Option<License> {
    joined(licenses, "OR", from_spdx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(l: Option<License>) -> String {
        l.map(|l| l.expression).unwrap_or_default()
    }

    #[test]
    fn expressions_keep_their_shape_and_reference_what_is_unknown() {
        assert_eq!(e(from_spdx("MIT")), "MIT");
        assert_eq!(e(from_spdx("(mit OR apache-2.0)")), "(MIT OR Apache-2.0)");
        assert_eq!(
            e(from_spdx(
                "GPL-2.0-or-later WITH Classpath-exception-2.0 AND Foo"
            )),
            "GPL-2.0-or-later WITH Classpath-exception-2.0 AND LicenseRef-Foo"
        );
        let l = from_spdx("SEE LICENSE IN LICENSE.txt").unwrap();
        assert_eq!(l.expression, "LicenseRef-SEE-LICENSE-IN-LICENSE.txt");
        assert_eq!(l.refs[&l.expression], "SEE LICENSE IN LICENSE.txt");
        assert_eq!(e(from_spdx("Apache License 2.0")), "Apache-2.0");
        assert_eq!(e(from_spdx("MIT AND")), "LicenseRef-MIT-AND");
        assert_eq!(e(from_spdx("((MIT)")), "LicenseRef-MIT");
        assert_eq!(from_spdx("  "), None);
    }

    #[test]
    fn debian_names() {
        let names = vec![
            "GPL-2+".to_string(),
            "GPL-2+ or Artistic".to_string(),
            "LGPL-2.1+ with OpenSSL exception".to_string(),
            "public-domain".to_string(),
            "Expat".to_string(),
        ];
        let l = from_debian(&names).unwrap();
        assert_eq!(
            l.expression,
            "GPL-2.0-or-later AND (GPL-2.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-LGPL-2.1-with-OpenSSL-exception AND LicenseRef-public-domain AND MIT"
        );
        assert_eq!(l.refs.len(), 2);
    }

    #[test]
    fn python_prefers_the_expression_then_a_known_name_then_classifiers() {
        let cls = vec![
            "License :: OSI Approved :: Apache Software License".to_string(),
            "License :: OSI Approved :: BSD License".to_string(),
        ];
        assert_eq!(
            e(from_python(Some("BSD-3-Clause"), Some("MIT"), &cls)),
            "BSD-3-Clause"
        );
        assert_eq!(e(from_python(None, Some("MIT"), &cls)), "MIT");
        assert_eq!(
            e(from_python(None, Some("Dual License"), &cls)),
            "Apache-2.0 OR LicenseRef-BSD-License"
        );
        assert_eq!(
            e(from_python(None, Some("Dual License"), &[])),
            "LicenseRef-Dual-License"
        );
        assert_eq!(from_python(None, None, &[]), None);
    }

    #[test]
    fn references_are_valid_ids_and_unique() {
        assert_eq!(
            ref_name("GPL-2+ w/ exception!"),
            "LicenseRef-GPL-2-w-exception"
        );
        assert_eq!(ref_name("!!!"), "LicenseRef-unknown");
        assert!(ref_name(&"x".repeat(500)).len() <= 75);
        let l = from_npm(&[
            "GPL 2".to_string(),
            "GPL-2".to_string(),
            "GPL_2".to_string(),
        ])
        .unwrap();
        assert_eq!(
            l.expression,
            "LicenseRef-GPL-2 OR GPL-2.0-only OR LicenseRef-GPL-2-2"
        );
        assert_eq!(l.refs["LicenseRef-GPL-2-2"], "GPL_2");
    }
}
