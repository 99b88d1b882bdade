//! SPDX 2.3 JSON: the image as a package (purpose `CONTAINER`) that `CONTAINS` every package
//! found, its distribution as an `OPERATING-SYSTEM` package, each package's purl as a
//! `PACKAGE-MANAGER` reference, its declared license as an SPDX expression (with the names that
//! are not SPDX identifiers as extracted licensing information), and where strata found it and
//! which layer and instruction added it as an annotation whose comment is a JSON object
//! (`{"layer": DIFFID, "created_by": …, "location": …}`). Deterministic: the same inventory
//! and image give the same bytes ([`to_bytes`]).

use serde_json::{json, Map, Value};

use super::{license, purl, tool, ImageInfo, Inventory, Package};

/// The SPDX identifier of a package.
fn spdx_id(p: &Package) -> String {
    format!("SPDXRef-Package-{}", p.id())
}

/// The document as JSON.
pub fn document(inv: &Inventory, image: &ImageInfo) -> Value {
    let created = crate::oci::rfc3339(image.created);
    let annotator = format!("Tool: {}", tool());
    let (expressions, refs) =
        license::unify(inv.packages.iter().filter_map(|p| p.license.as_ref()));
    let mut expressions = expressions.into_iter();
    let image_name = image.name.rsplit('/').next().unwrap_or(&image.name);
    let image_name = image_name
        .split(':')
        .next()
        .unwrap_or(image_name)
        .to_ascii_lowercase();
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": image.name,
        "versionInfo": image.digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl::make("oci", &[], &image_name, Some(image.digest.as_str()), &[]),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    if let Some(d) = &inv.distro {
        if let Some(id) = &d.id {
            let mut os = Map::new();
            os.insert("SPDXID".into(), json!("SPDXRef-OperatingSystem"));
            os.insert("name".into(), json!(id));
            if let Some(v) = &d.version_id {
                os.insert("versionInfo".into(), json!(v));
            }
            if let Some(n) = &d.pretty_name {
                os.insert("description".into(), json!(n));
            }
            os.insert("downloadLocation".into(), json!("NOASSERTION"));
            os.insert("filesAnalyzed".into(), json!(false));
            os.insert("primaryPackagePurpose".into(), json!("OPERATING-SYSTEM"));
            packages.push(Value::Object(os));
            relationships.push(json!({
                "spdxElementId": "SPDXRef-Image",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": "SPDXRef-OperatingSystem",
            }));
        }
    }
    for p in &inv.packages {
        let id = spdx_id(p);
        let mut o = Map::new();
        o.insert("SPDXID".into(), json!(id));
        o.insert("name".into(), json!(p.name));
        if let Some(v) = &p.version {
            o.insert("versionInfo".into(), json!(v));
        }
        o.insert("downloadLocation".into(), json!("NOASSERTION"));
        o.insert("filesAnalyzed".into(), json!(false));
        o.insert("licenseConcluded".into(), json!("NOASSERTION"));
        let declared = match &p.license {
            Some(_) => expressions.next().unwrap_or_else(|| "NOASSERTION".into()),
            None => "NOASSERTION".into(),
        };
        o.insert("licenseDeclared".into(), json!(declared));
        o.insert("copyrightText".into(), json!("NOASSERTION"));
        o.insert(
            "sourceInfo".into(),
            json!(format!(
                "{} evidence at {}",
                p.ecosystem.as_str(),
                p.location
            )),
        );
        o.insert("primaryPackagePurpose".into(), json!("LIBRARY"));
        o.insert(
            "externalRefs".into(),
            json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }]),
        );
        let mut note = Map::new();
        note.insert("layer".into(), json!(p.layer.diff_id.to_string()));
        note.insert("created_by".into(), json!(p.layer.created_by));
        note.insert("location".into(), json!(p.location));
        if let Some(i) = &p.installer {
            note.insert("installer".into(), json!(i));
        }
        if let Some(st) = &p.stage {
            note.insert("stage".into(), json!(st));
        }
        if let Some(s) = &p.checksum {
            note.insert("go_sum".into(), json!(s));
        }
        if let Some(r) = &p.record {
            note.insert("record_files".into(), json!(r.files));
            note.insert("record_digest".into(), json!(r.digest.to_string()));
        }
        o.insert(
            "annotations".into(),
            json!([{
                "annotationDate": created,
                "annotationType": "OTHER",
                "annotator": annotator,
                "comment": String::from_utf8_lossy(&crate::oci::canonical_value_json(&Value::Object(note))),
            }]),
        );
        packages.push(Value::Object(o));
        // A builder stage's package is not in the image: it built it.
        relationships.push(match &p.stage {
            None => json!({
                "spdxElementId": "SPDXRef-Image",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }),
            Some(_) => json!({
                "spdxElementId": id,
                "relationshipType": "BUILD_DEPENDENCY_OF",
                "relatedSpdxElement": "SPDXRef-Image",
            }),
        });
    }
    let extracted: Vec<Value> = refs
        .iter()
        .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text}))
        .collect();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image.name,
        "documentNamespace": format!(
            "https://strata.invalid/spdx/{}-{}",
            purl::make("x", &[], &image_name, None, &[]).trim_start_matches("pkg:x/"),
            image.digest.hex()
        ),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: {}", tool())],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(extracted);
    }
    doc
}

/// The document's bytes (canonical JSON: sorted keys, no whitespace).
pub fn to_bytes(inv: &Inventory, image: &ImageInfo) -> Vec<u8> {
    crate::oci::canonical_value_json(&document(inv, image))
}
