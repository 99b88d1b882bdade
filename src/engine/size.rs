//! The size report: an image's layers with their sizes and the instruction that made each, and
//! hints about what makes it fat (package-manager caches, bytecode or files deleted in a later
//! layer, which still ship in the earlier one, compilers and headers in the final stage of a
//! multi-stage build). Shown at the end of a build and by `strata history`.
//!
//! Each layer's facts ([`crate::layer::facts`]) are read once from its blob and cached in the
//! store by blob digest, so a rebuild reads a few small JSON files, not the layers.
//!
//! Two sizes per layer, named for what they are: its *content* (the bytes of its files once
//! unpacked: the same for an image id in any store, what `strata images` shows), and what a
//! *push* sends for it: the blob itself when the store keeps it compressed, the compressed copy
//! an earlier push made, else an estimate of its gzip size ([`crate::layer::estimate`],
//! marked `≈`). The blob as stored (uncompressed by default) is neither, and only in the json.

use serde::{Deserialize, Serialize};

use crate::engine::error::{BuildError, Doing as _};
use crate::layer::facts::{self, LayerFacts};
use crate::oci::{Descriptor, Digest};
use crate::store::{ImageRecord, Store};

/// Below this many bytes a finding is not worth a hint.
pub const HINT_BYTES: u64 = 1 << 20;

/// One layer of the image, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRow {
    pub digest: Digest,
    /// Bytes of the blob as this store keeps it (uncompressed unless built with
    /// `--compression` or pulled).
    pub stored: u64,
    /// Bytes a push sends for it (see the module's documentation).
    pub push: u64,
    /// Whether `push` is an estimate.
    pub push_estimated: bool,
    /// Bytes of file content once unpacked.
    pub content: u64,
    pub files: u64,
    /// The history entry's `created_by` (the instruction).
    pub created_by: String,
}

/// Something that makes the image larger than its content needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// `cache-pip`, `cache-uv`, `cache-poetry`, `cache-pipenv`, `cache-pdm`, `cache-apt-lists`,
    /// `cache-apt-archives`, `cache-apt-pkgcache`, `cache-apk`, `cache-npm`, `cache-yarn`,
    /// `pycache-deleted-later`, `deleted-later`, `duplicated`, `compiler-in-final-stage`,
    /// `headers-in-final-stage`.
    pub kind: String,
    /// The layer (1-based, bottom first) whose bytes it is about.
    pub layer: usize,
    pub bytes: u64,
    /// What was found.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeReport {
    /// Bytes of file content of every layer.
    pub content: u64,
    /// Bytes a push sends for every layer (an estimate if any layer's is).
    pub push: u64,
    pub push_estimated: bool,
    /// Bytes of the layer blobs as this store keeps them.
    pub stored: u64,
    pub layers: Vec<LayerRow>,
    pub hints: Vec<Hint>,
}

fn facts_file(store: &Store, digest: &Digest) -> std::path::PathBuf {
    store.facts_dir().join(format!("{}.json", digest.hex()))
}

/// Keep the facts of the layer blob `digest`; best effort.
fn keep_facts(store: &Store, digest: &Digest, f: &LayerFacts) {
    let _ = (|| -> Result<(), BuildError> {
        fs_err::create_dir_all(store.facts_dir())?;
        crate::store::write_atomic(
            &store.tmp_dir(),
            &facts_file(store, digest),
            &serde_json::to_vec(f)?,
        )?;
        Ok(())
    })();
}

/// The facts of the layer blob `digest`, from the store's cache or read from the blob (and
/// cached).
pub fn layer_facts(store: &Store, digest: &Digest) -> Result<LayerFacts, BuildError> {
    let cached = facts_file(store, digest);
    let known: Option<LayerFacts> = fs_err::read(&cached)
        .ok()
        .and_then(|b| serde_json::from_slice::<LayerFacts>(&b).ok())
        .filter(|f| f.version == facts::VERSION);
    // The layer's paths in the same pass when the store has none (a base image loaded from an
    // archive): later builds' COPY and WORKDIR answer from them instead of unpacking.
    let need_paths = !store.layer_paths_file(digest).exists();
    if let (Some(f), false) = (&known, need_paths) {
        return Ok(f.clone());
    }
    // One pass for both (an uncompressed layer by its tar headers only).
    let (read, paths) = facts::read_blob_with_paths(store.open_blob(digest)?)
        .doing_with(|| format!("reading layer {digest}"))?;
    // Best effort: a report without a cache entry is still right, only slower next time.
    if need_paths {
        let _ = store.put_layer_paths(digest, &paths);
    }
    Ok(match known {
        Some(f) => f,
        None => {
            keep_facts(store, digest, &read);
            read
        }
    })
}

/// What a push sends for layer `l` and whether that is an estimate: the blob when it is stored
/// compressed (sent as it is), the compressed copy an earlier push made, else the estimate of
/// its gzip size (computed once and kept with its facts).
pub fn push_size(store: &Store, l: &Descriptor) -> Result<(u64, bool), BuildError> {
    if !crate::oci::media::is_uncompressed_layer(&l.media_type) {
        return Ok((l.size, false));
    }
    if let Some(c) = store.compressed_copy(l, crate::layer::Compression::GZIP) {
        return Ok((c.size, false));
    }
    let mut f = layer_facts(store, &l.digest)?;
    if let Some(e) = f.gzip_estimate {
        return Ok((e, true));
    }
    let blob = store.open_blob(&l.digest)?;
    let e = crate::layer::estimate::gzip_size(&blob, l.size)
        .doing_with(|| format!("estimating the compressed size of layer {}", l.digest))?;
    f.gzip_estimate = Some(e);
    keep_facts(store, &l.digest, &f);
    Ok((e, true))
}

/// Bytes of file content of `image`'s layers once unpacked (what `strata images` shows): the
/// same for an image id in any store, whatever its layers' compression.
pub fn content(store: &Store, image: &ImageRecord) -> Result<u64, BuildError> {
    image
        .manifest
        .layers
        .iter()
        .map(|l| layer_facts(store, &l.digest).map(|f| f.bytes))
        .sum()
}

/// The layers of `image` with their history entries, bottom first.
fn rows(
    store: &Store,
    image: &ImageRecord,
    facts: &[LayerFacts],
) -> Result<Vec<LayerRow>, BuildError> {
    let mut made_by = image
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone().unwrap_or_default());
    image
        .manifest
        .layers
        .iter()
        .zip(facts)
        .map(|(l, f)| {
            let (push, push_estimated) = push_size(store, l)?;
            Ok(LayerRow {
                digest: l.digest.clone(),
                stored: l.size,
                push,
                push_estimated,
                content: f.bytes,
                files: f.files,
                created_by: made_by.next().unwrap_or_default(),
            })
        })
        .collect()
}

/// The size report of `image`; `multi_stage` when it is the final stage of a multi-stage
/// build (compilers and headers are worth a hint only there).
pub fn report(
    store: &Store,
    image: &ImageRecord,
    multi_stage: bool,
) -> Result<SizeReport, BuildError> {
    let facts = image
        .manifest
        .layers
        .iter()
        .map(|l| layer_facts(store, &l.digest))
        .collect::<Result<Vec<_>, _>>()?;
    let layers = rows(store, image, &facts)?;
    let hints = hints(&facts, &layers, multi_stage);
    Ok(SizeReport {
        content: layers.iter().map(|l| l.content).sum(),
        push: layers.iter().map(|l| l.push).sum(),
        push_estimated: layers.iter().any(|l| l.push_estimated),
        stored: layers.iter().map(|l| l.stored).sum(),
        layers,
        hints,
    })
}

/// The size report of one platform's image of a multi-platform build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformReport {
    /// `linux/arm64`, from the image's config (normalized: arm64's `v8` is left out).
    pub platform: String,
    pub report: SizeReport,
}

/// The size reports of a multi-platform build's images, in `--platform`'s order.
pub fn platform_reports(
    store: &Store,
    images: &[ImageRecord],
    multi_stage: bool,
) -> Result<Vec<PlatformReport>, BuildError> {
    images
        .iter()
        .map(|img| {
            let platform = crate::oci::Platform {
                architecture: img.config.architecture.clone(),
                os: img.config.os.clone(),
                os_version: None,
                variant: img.config.variant.clone(),
            }
            .normalized()
            .to_string();
            Ok(PlatformReport {
                platform,
                report: report(store, img, multi_stage)?,
            })
        })
        .collect()
}

/// The reports of a multi-platform build as text: one line per platform's image (its content,
/// as `strata images` counts it, what a push sends, its layers), the sum (the index's SIZE in
/// `strata images`), then the hints, each once with the platforms it is about.
pub fn render_platforms(reports: &[PlatformReport]) -> String {
    let w = reports
        .iter()
        .map(|r| r.platform.chars().count())
        .chain(["together".len()])
        .max()
        .unwrap_or(0);
    let mut s = format!(
        "size of each platform's image:\n  {:<w$}    CONTENT       PUSH  LAYERS\n",
        "PLATFORM"
    );
    let line = |name: &str, content: u64, push: u64, estimated: bool, layers: usize| {
        format!(
            "  {name:<w$}  {:>9}  {:>9}  {layers:>6}\n",
            human(content),
            approx(push, estimated)
        )
    };
    for r in reports {
        let r2 = &r.report;
        s.push_str(&line(
            &r.platform,
            r2.content,
            r2.push,
            r2.push_estimated,
            r2.layers.len(),
        ));
    }
    let (content, push) = reports.iter().fold((0, 0), |(c, p), r| {
        (c + r.report.content, p + r.report.push)
    });
    let estimated = reports.iter().any(|r| r.report.push_estimated);
    let layers = reports.iter().map(|r| r.report.layers.len()).sum();
    s.push_str(&line("together", content, push, estimated, layers));
    if estimated {
        s.push_str(
            "  (≈: estimated gzip size; `strata history --platform P NAME` lists one's layers)\n",
        );
    } else {
        s.push_str("  (`strata history --platform P NAME` lists one platform's layers)\n");
    }
    let mut hints: Vec<(&Hint, Vec<&str>)> = Vec::new();
    for r in reports {
        for h in &r.report.hints {
            match hints.iter_mut().find(|(seen, _)| seen.message == h.message) {
                Some((_, on)) => on.push(&r.platform),
                None => hints.push((h, vec![&r.platform])),
            }
        }
    }
    for (h, on) in hints {
        s.push_str(&format!(
            "hint ({}): {}\n      {}\n",
            on.join(", "),
            h.message,
            h.fix
        ));
    }
    s
}

/// `created_by` cut to something a line can hold.
fn instruction(by: &str) -> String {
    let by = by
        .strip_prefix("/bin/sh -c #(nop) ")
        .or_else(|| by.strip_prefix("/bin/sh -c "))
        .unwrap_or(by);
    let by = by
        .strip_suffix(" # strata")
        .or_else(|| by.strip_suffix(" # buildkit"))
        .unwrap_or(by)
        .trim();
    let one_line: String = by.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 60 {
        format!("{}…", one_line.chars().take(59).collect::<String>())
    } else {
        one_line
    }
}

/// What could make the image smaller: caches left in layers, files deleted in a later layer
/// than the one that added them, directories written twice and, in the final stage of a
/// multi-stage build, compilers and headers; largest first.
fn hints(facts: &[LayerFacts], layers: &[LayerRow], multi_stage: bool) -> Vec<Hint> {
    let mut out = Vec::new();
    let made = |i: usize| instruction(&layers[i].created_by);
    for (i, f) in facts.iter().enumerate() {
        cache_hints(i, f, &made, &mut out);
        deleted_later_hints(facts, i, &made, &mut out);
    }
    duplicated_hints(facts, &made, &mut out);
    if multi_stage {
        final_stage_hints(facts, &made, &mut out);
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.layer.cmp(&b.layer)));
    out
}

/// The caches of package managers that layer `i` (0-based) holds.
fn cache_hints(i: usize, f: &LayerFacts, made: &dyn Fn(usize) -> String, out: &mut Vec<Hint>) {
    for (kind, bytes) in &f.caches {
        if *bytes < HINT_BYTES {
            continue;
        }
        let (what, fix) = match kind.as_str() {
            "pip" => ("pip's cache", "use `RUN --mount=type=cache,target=<the user's home>/.cache/pip pip install …`, or `pip install --no-cache-dir`"),
            "uv" => ("uv's cache", "use `RUN --mount=type=cache,target=<the user's home>/.cache/uv uv …`, or set UV_NO_CACHE=1 for the step"),
            "poetry" => ("Poetry's cache (~/.cache/pypoetry)", "use `RUN --mount=type=cache,target=<the user's home>/.cache/pypoetry poetry install …`, or `poetry install --no-cache`"),
            "pipenv" => ("Pipenv's cache (~/.cache/pipenv)", "use `RUN --mount=type=cache,target=<the user's home>/.cache/pipenv pipenv install …`, or remove it in the same RUN"),
            "pdm" => ("PDM's cache (~/.cache/pdm)", "use `RUN --mount=type=cache,target=<the user's home>/.cache/pdm pdm install …`, or remove it in the same RUN"),
            "apt-lists" => ("apt's package lists (/var/lib/apt/lists)", "`rm -rf /var/lib/apt/lists/*` in the same RUN as apt-get install, or mount a cache on /var/lib/apt"),
            "apt-archives" => ("downloaded .deb files (/var/cache/apt/archives)", "`apt-get clean` in the same RUN, or mount a cache on /var/cache/apt"),
            "apt-pkgcache" => ("apt's package caches (/var/cache/apt/pkgcache.bin and srcpkgcache.bin, which removing /var/lib/apt/lists leaves)", "`apt-get clean` in the same RUN as apt-get install (Debian's images do it through /etc/apt/apt.conf.d/docker-clean), or mount a cache on /var/cache/apt"),
            "apk" => ("apk's cache (/var/cache/apk: package indexes and packages)", "`apk add --no-cache …`, or mount a cache on /var/cache/apk"),
            "npm" => ("npm's cache (~/.npm)", "use `RUN --mount=type=cache,target=<the user's home>/.npm npm ci`, or `npm cache clean --force` in the same RUN"),
            "yarn" => ("Yarn's cache", "use `RUN --mount=type=cache,target=<the user's home>/.cache/yarn yarn install …`, or `yarn cache clean` in the same RUN"),
            _ => continue,
        };
        out.push(Hint {
            kind: format!("cache-{kind}"),
            layer: i + 1,
            bytes: *bytes,
            message: format!("{what}: {} in layer {} ({})", human(*bytes), i + 1, made(i)),
            fix: fix.to_string(),
        });
    }
}

/// What layer `i` deletes that lower layers added: those bytes still ship, in them.
fn deleted_later_hints(
    facts: &[LayerFacts],
    i: usize,
    made: &dyn Fn(usize) -> String,
    out: &mut Vec<Hint>,
) {
    let f = &facts[i];
    let mut pyc = vec![0u64; i];
    let mut other = vec![0u64; i];
    for gone in f.deleted.iter().chain(&f.opaque) {
        for (j, lower) in facts[..i].iter().enumerate() {
            let Some(b) = lower.sizes.get(gone) else {
                continue;
            };
            if gone.ends_with("__pycache__") || gone.ends_with(".pyc") {
                pyc[j] += b;
            } else {
                other[j] += b;
            }
        }
    }
    for j in 0..i {
        if pyc[j] >= HINT_BYTES {
            out.push(Hint {
                kind: "pycache-deleted-later".into(),
                layer: j + 1,
                bytes: pyc[j],
                message: format!(
                    "{} of __pycache__ written in layer {} ({}) and deleted in layer {} ({}) still ships in layer {}",
                    human(pyc[j]), j + 1, made(j), i + 1, made(i), j + 1
                ),
                fix: "do not write it (PYTHONDONTWRITEBYTECODE=1 for that step, or `pip install --no-compile`), or delete it in the same RUN".into(),
            });
        }
        if other[j] >= HINT_BYTES {
            out.push(Hint {
                kind: "deleted-later".into(),
                layer: j + 1,
                bytes: other[j],
                message: format!(
                    "{} added in layer {} ({}) is deleted in layer {} ({}) but still ships in layer {}",
                    human(other[j]), j + 1, made(j), i + 1, made(i), j + 1
                ),
                fix: "delete it in the step that creates it, or build it in another stage and COPY --from only what is needed".into(),
            });
        }
    }
}

/// A layer that holds a lower layer's directory again, byte for byte the same size: the
/// files were rewritten without a change of content (`chown -R` or `chmod -R` after a COPY,
/// which copies every file up). Reported once per directory tree, at its top.
fn duplicated_hints(facts: &[LayerFacts], made: &dyn Fn(usize) -> String, out: &mut Vec<Hint>) {
    for (j, f) in facts.iter().enumerate() {
        let mut reported: Vec<&str> = Vec::new();
        for (d, bytes) in &f.sizes {
            if *bytes < HINT_BYTES
                || reported
                    .iter()
                    .any(|r| d.strip_prefix(r).is_some_and(|rest| rest.starts_with('/')))
            {
                continue;
            }
            let Some(i) = (0..j).rev().find(|i| facts[*i].sizes.get(d) == Some(bytes)) else {
                continue;
            };
            reported.push(d);
            // Named by the deepest directory that holds all of it (/opt/venv, not /opt).
            let mut d = d.as_str();
            while let Some((child, _)) = f
                .sizes
                .range(format!("{d}/")..)
                .take_while(|(k, _)| k.starts_with(&format!("{d}/")))
                .find(|(k, b)| {
                    let below = format!("{k}/");
                    *b == bytes
                        && !k[d.len() + 1..].contains('/')
                        && facts[i].sizes.get(k.as_str()) == Some(bytes)
                        // A directory (something is listed below it), not a large file.
                        && f.sizes
                            .range(below.clone()..)
                            .next()
                            .is_some_and(|(n, _)| n.starts_with(&below))
                })
            {
                d = child;
            }
            out.push(Hint {
                kind: "duplicated".into(),
                layer: j + 1,
                bytes: *bytes,
                message: format!(
                    "/{d} ({}) of layer {} ({}) is in layer {} ({}) again: the image carries it twice",
                    human(*bytes), i + 1, made(i), j + 1, made(j)
                ),
                fix: "set owners and modes as the files are copied (COPY --chown=… --chmod=…) instead of `chown -R`/`chmod -R` in a later RUN".into(),
            });
        }
    }
}

/// Compilers and headers still present in the final stage of a multi-stage build (not
/// deleted by a later layer).
fn final_stage_hints(facts: &[LayerFacts], made: &dyn Fn(usize) -> String, out: &mut Vec<Hint>) {
    let deleted_later = |i: usize, p: &str| {
        facts[i + 1..].iter().any(|f| {
            f.deleted
                .iter()
                .chain(&f.opaque)
                .any(|d| p == d || p.starts_with(&format!("{d}/")))
        })
    };
    if let Some((i, p)) = facts.iter().enumerate().find_map(|(i, f)| {
        f.compilers
            .iter()
            .find(|p| !deleted_later(i, p))
            .map(|p| (i, p.clone()))
    }) {
        out.push(Hint {
            kind: "compiler-in-final-stage".into(),
            layer: i + 1,
            bytes: facts[i].sizes.get("usr/lib/gcc").copied().unwrap_or(0),
            message: format!(
                "the final stage has a compiler: /{p} from layer {} ({})",
                i + 1,
                made(i)
            ),
            fix: "install compilers only in the builder stage and COPY --from it the results (a venv, a wheel); start the final stage from a slim base".into(),
        });
    }
    for (i, f) in facts.iter().enumerate() {
        if f.headers >= HINT_BYTES && !deleted_later(i, "usr/include") {
            out.push(Hint {
                kind: "headers-in-final-stage".into(),
                layer: i + 1,
                bytes: f.headers,
                message: format!(
                    "{} of C headers (/usr/include, from -dev packages) in layer {} ({}) of the final stage",
                    human(f.headers),
                    i + 1,
                    made(i)
                ),
                fix: "install -dev packages only in the builder stage; the final stage needs the runtime libraries alone".into(),
            });
        }
    }
}

/// Bytes for people, as docker prints them: `512B`, `3.4kB`, `12.1MB`, `1.2GB` (powers of
/// 1000).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// `bytes` as [`human`] prints them, marked `≈` when estimated.
pub fn approx(bytes: u64, estimated: bool) -> String {
    if estimated {
        format!("≈{}", human(bytes))
    } else {
        human(bytes)
    }
}

/// The report as text: a table of layers (top first, as `docker history`), then the hints.
pub fn render(r: &SizeReport) -> String {
    let mut s = format!(
        "size: {} of content in {} layer{}; a push sends {}{}\n  LAYER    CONTENT       PUSH  CREATED BY\n",
        human(r.content),
        r.layers.len(),
        if r.layers.len() == 1 { "" } else { "s" },
        approx(r.push, r.push_estimated),
        if r.push_estimated {
            " (≈: estimated gzip size)"
        } else {
            ""
        }
    );
    for (i, l) in r.layers.iter().enumerate().rev() {
        s.push_str(&format!(
            "  {:>5}  {:>9}  {:>9}  {}\n",
            i + 1,
            human(l.content),
            approx(l.push, l.push_estimated),
            instruction(&l.created_by)
        ));
    }
    for h in &r.hints {
        s.push_str(&format!("hint: {}\n      {}\n", h.message, h.fix));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(by: &str) -> LayerRow {
        LayerRow {
            digest: Digest::of(by.as_bytes()),
            stored: 0,
            push: 0,
            push_estimated: false,
            content: 0,
            files: 0,
            created_by: by.into(),
        }
    }

    #[test]
    fn bytes_deleted_later_are_charged_to_the_layer_that_added_them() {
        let mut base = LayerFacts::default();
        base.sizes.insert("usr/lib/gcc".into(), 50 << 20);
        base.compilers.push("usr/bin/gcc-12".into());
        let mut app = LayerFacts::default();
        app.sizes.insert("app/__pycache__".into(), 2 << 20);
        app.sizes.insert("tmp/build".into(), 30 << 20);
        app.caches.insert("pip".into(), 8 << 20);
        let cleanup = LayerFacts {
            deleted: vec!["app/__pycache__".into(), "tmp/build".into()],
            ..Default::default()
        };
        let facts = vec![base, app, cleanup];
        let layers = vec![
            row("FROM python:3.12"),
            row("RUN pip install ."),
            row("RUN rm -rf /tmp/build"),
        ];
        let h = hints(&facts, &layers, true);
        let kinds: Vec<(&str, usize, u64)> = h
            .iter()
            .map(|h| (h.kind.as_str(), h.layer, h.bytes))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("compiler-in-final-stage", 1, 50 << 20),
                ("deleted-later", 2, 30 << 20),
                ("cache-pip", 2, 8 << 20),
                ("pycache-deleted-later", 2, 2 << 20),
            ]
        );
        assert!(
            h[1].message
                .contains("deleted in layer 3 (RUN rm -rf /tmp/build)"),
            "{}",
            h[1].message
        );
        // A venv copied, then chown'ed: every file again, reported at the top directory.
        let mut venv = LayerFacts::default();
        venv.sizes.insert("venv".into(), 40 << 20);
        venv.sizes.insert("venv/lib".into(), 40 << 20);
        let dup = hints(
            &[venv.clone(), venv],
            &[
                row("COPY --from=build /venv /venv"),
                row("RUN chown -R app /venv"),
            ],
            false,
        );
        assert_eq!(dup.len(), 1, "{dup:?}");
        assert_eq!((dup[0].kind.as_str(), dup[0].layer), ("duplicated", 2));
        assert!(
            dup[0].message.starts_with(
                "/venv (41.9MB) of layer 1 (COPY --from=build /venv /venv) is in layer 2"
            ),
            "{}",
            dup[0].message
        );
        // Not a multi-stage build: no compiler hint.
        assert!(hints(&facts, &layers, false)
            .iter()
            .all(|h| h.kind != "compiler-in-final-stage"));
        // A compiler removed by a later layer is not there any more.
        let mut gone = facts.clone();
        gone[2].deleted.push("usr/bin/gcc-12".into());
        assert!(hints(&gone, &layers, true)
            .iter()
            .all(|h| h.kind != "compiler-in-final-stage"));
    }

    #[test]
    fn a_multi_platform_report_has_a_line_per_platform_and_the_sum() {
        let report = |content: u64, push: u64, estimated: bool, hint: Option<&str>| SizeReport {
            content,
            push,
            push_estimated: estimated,
            stored: content,
            layers: vec![row("COPY a /a"), row("COPY b /b")],
            hints: hint
                .map(|m| Hint {
                    kind: "cache-pip".into(),
                    layer: 2,
                    bytes: 2 << 20,
                    message: m.into(),
                    fix: "use a cache mount".into(),
                })
                .into_iter()
                .collect(),
        };
        let text = render_platforms(&[
            PlatformReport {
                platform: "linux/amd64".into(),
                report: report(1_500_000, 700_000, false, Some("pip's cache")),
            },
            PlatformReport {
                platform: "linux/arm/v7".into(),
                report: report(1_200_000, 600_000, true, Some("pip's cache")),
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1], "  PLATFORM        CONTENT       PUSH  LAYERS",
            "{text}"
        );
        assert_eq!(
            lines[2], "  linux/amd64       1.5MB    700.0kB       2",
            "{text}"
        );
        assert_eq!(
            lines[3], "  linux/arm/v7      1.2MB   ≈600.0kB       2",
            "{text}"
        );
        assert_eq!(
            lines[4], "  together          2.7MB     ≈1.3MB       4",
            "{text}"
        );
        // The same finding on both platforms is one hint naming both.
        assert_eq!(text.matches("pip's cache").count(), 1, "{text}");
        assert!(
            text.contains("hint (linux/amd64, linux/arm/v7): pip's cache"),
            "{text}"
        );
    }

    #[test]
    fn small_findings_are_not_hints_and_sizes_read_as_docker_prints_them() {
        let mut f = LayerFacts::default();
        f.caches.insert("pip".into(), HINT_BYTES - 1);
        assert!(hints(&[f], &[row("RUN x")], true).is_empty());
        assert_eq!(human(999), "999B");
        assert_eq!(human(12_345_678), "12.3MB");
        assert_eq!(
            instruction("/bin/sh -c #(nop)  CMD [\"python\"]"),
            "CMD [\"python\"]"
        );
    }
}
