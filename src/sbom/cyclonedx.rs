//! CycloneDX 1.6 JSON: the image as the `container` the BOM describes, its distribution as an
//! `operating-system` component, and every package a `library` component with its purl, its
//! license (an SPDX identifier, an expression, or a name), and where strata found it and which
//! layer and instruction added it as `strata:*` properties. Deterministic: the serial number
//! is derived from the image's digest and the same inventory gives the same bytes.

use serde_json::{json, Map, Value};

use super::{tool, ImageInfo, Inventory, License, Package};

/// A UUID (version 5 layout) from the image's digest, so that the serial number is the same
/// for the same image.
fn serial(image: &ImageInfo) -> String {
    let h = crate::oci::Digest::of(format!("cyclonedx\0{}", image.digest).as_bytes());
    let mut b = hex::decode(&h.hex()[..32]).unwrap_or_else(|_| vec![0; 16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// A license as CycloneDX's `licenses` array: one identifier, one name, or an expression.
fn licenses(l: &License) -> Value {
    let e = &l.expression;
    if !e.contains(' ') {
        if let Some(text) = l.refs.get(e) {
            return json!([{"license": {"name": text}}]);
        }
        if super::license::is_listed(e) {
            return json!([{"license": {"id": e}}]);
        }
    }
    json!([{"expression": e}])
}

fn property(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

fn component(p: &Package) -> Value {
    let mut c = Map::new();
    c.insert("type".into(), json!("library"));
    c.insert("bom-ref".into(), json!(p.id()));
    c.insert("name".into(), json!(p.name));
    if let Some(v) = &p.version {
        c.insert("version".into(), json!(v));
    }
    c.insert("purl".into(), json!(p.purl));
    if let Some(l) = &p.license {
        c.insert("licenses".into(), licenses(l));
    }
    let mut props = vec![
        property("strata:ecosystem", p.ecosystem.as_str()),
        property("strata:layer:diff_id", p.layer.diff_id.to_string()),
        property("strata:layer:created_by", p.layer.created_by.clone()),
        property("strata:location", p.location.clone()),
    ];
    if let Some(d) = &p.layer.digest {
        props.push(property("strata:layer:digest", d.to_string()));
    }
    if let Some(i) = &p.installer {
        props.push(property("strata:python:installer", i.clone()));
    }
    if let Some(r) = &p.record {
        props.push(property("strata:python:record:files", r.files.to_string()));
        props.push(property(
            "strata:python:record:digest",
            r.digest.to_string(),
        ));
    }
    if let Some(s) = &p.checksum {
        props.push(property("strata:go:sum", s.clone()));
    }
    if let Some(s) = &p.source {
        props.push(property("strata:source", s.clone()));
    }
    c.insert("properties".into(), Value::Array(props));
    Value::Object(c)
}

/// The BOM as JSON.
pub fn document(inv: &Inventory, image: &ImageInfo) -> Value {
    let mut components: Vec<Value> = Vec::new();
    if let Some(d) = &inv.distro {
        if let Some(id) = &d.id {
            let mut os = Map::new();
            os.insert("type".into(), json!("operating-system"));
            os.insert("bom-ref".into(), json!("os"));
            os.insert("name".into(), json!(id));
            if let Some(v) = &d.version_id {
                os.insert("version".into(), json!(v));
            }
            if let Some(n) = &d.pretty_name {
                os.insert("description".into(), json!(n));
            }
            components.push(Value::Object(os));
        }
    }
    components.extend(inv.packages.iter().map(component));
    let (tool_name, tool_version) = tool()
        .split_once('-')
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .unwrap_or_default();
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial(image),
        "version": 1,
        "metadata": {
            "timestamp": crate::oci::rfc3339(image.created),
            "tools": {"components": [{"type": "application", "name": tool_name, "version": tool_version}]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": image.name,
                "version": image.digest.to_string(),
            },
        },
        "components": components,
    })
}

/// The BOM's bytes (canonical JSON).
pub fn to_bytes(inv: &Inventory, image: &ImageInfo) -> Vec<u8> {
    crate::oci::canonical_value_json(&document(inv, image))
}
