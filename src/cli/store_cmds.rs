//! Store subcommands: `images`, `inspect`, `history`, `tag`, `rmi`, `prune`, `df`, `fsck`,
//! `import`, `save`, `load`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use strata::layer::Compression;
use strata::oci;
use strata::store::{ImageRecord, ImageRef, SaveFormat, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct DfArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ImageArg {
    /// An image: NAME[:TAG], or an id (config digest or a prefix of it).
    image: String,
    /// For a name of an image index (several platforms): the platform's image (os/arch[/variant];
    /// default: this machine's). For a single image: checked against its platform.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
}

/// `--platform` as typed (`linux/arm64`, `arm64`, `linux/arm/v7`), in normal form.
pub fn platform_arg(p: Option<&str>) -> anyhow::Result<Option<oci::Platform>> {
    p.map(|s| oci::Platform::parse_specifier(s, &oci::Platform::host()))
        .transpose()
        .map_err(Into::into)
}

#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image to name.
    source: String,
    /// The new name, NAME[:TAG].
    target: String,
}

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Names or ids; an id removes every name of that image. Blobs stay until `prune`.
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Prune the build cache too: drop its least recently used steps until it takes at most
    /// --keep-storage (all of them without it). A plain prune leaves the build cache alone
    /// unless it is over its size limit.
    #[arg(long)]
    cache: bool,
    /// The build cache's size limit (`10g`, `512m`): a plain prune evicts the least recently
    /// used steps past it (default $STRATA_CACHE_LIMIT, else 10g); with --cache, what the
    /// cache keeps (default 0).
    #[arg(long, value_name = "SIZE")]
    keep_storage: Option<String>,
    /// Everything: every snapshot (unpacked layers are rebuilt when needed), the whole build
    /// cache and the RUN --mount=type=cache directories.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A directory (the root filesystem) or a tar (plain, gzip or zstd).
    source: PathBuf,
    /// The image name, NAME[:TAG].
    name: String,
    /// Layer compression.
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
    compression: String,
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Images to save (names or ids).
    #[arg(required = true)]
    images: Vec<String>,
    /// Where to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Archive format.
    #[arg(long, default_value = "oci-archive", value_parser = ["oci-archive", "docker-archive", "oci-dir"])]
    format: String,
    /// Save one platform's image of an image index (needed for a docker-archive). Without it
    /// an OCI archive or layout holds the whole index.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct UnpackArgs {
    /// The image.
    image: String,
    /// A new (or empty) directory to unpack its root filesystem into.
    dest: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// An OCI layout directory, an oci-archive or a docker-archive (the format is detected).
    #[arg(short = 'i', long = "input")]
    input: PathBuf,
}

pub use strata::engine::size::human as human_size;

fn ago(created: Option<&str>) -> String {
    let Some(c) = created else {
        return "unknown".into();
    };
    let Some(secs) = parse_rfc3339(c) else {
        return c.to_string();
    };
    ago_secs(oci::now_secs() - secs)
}

/// "1 minute ago", "3 hours ago": the unit in the singular for one.
pub fn ago_secs(d: i64) -> String {
    let (n, unit) = match d {
        d if d < 0 => return "in the future".into(),
        d if d < 60 => return "just now".into(),
        d if d < 3600 => (d / 60, "minute"),
        d if d < 86_400 => (d / 3600, "hour"),
        d if d < 86_400 * 60 => (d / 86_400, "day"),
        d if d < 86_400 * 730 => (d / (86_400 * 30), "month"),
        d => (d / (86_400 * 365), "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub(super) fn parse_rfc3339(s: &str) -> Option<i64> {
    let (y, mo, d) = (
        s.get(0..4)?.parse::<i64>().ok()?,
        s.get(5..7)?.parse::<i64>().ok()?,
        s.get(8..10)?.parse::<i64>().ok()?,
    );
    let (h, mi, se) = (
        s.get(11..13)?.parse::<i64>().ok()?,
        s.get(14..16)?.parse::<i64>().ok()?,
        s.get(17..19)?.parse::<i64>().ok()?,
    );
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// An image's platform as `--platform` takes it.
fn platform_of(i: &ImageRecord) -> String {
    oci::Platform {
        architecture: i.config.architecture.clone(),
        os: i.config.os.clone(),
        os_version: None,
        variant: i.config.variant.clone(),
    }
    .to_string()
}

/// A row of `strata images`: an image, or an image index with its platforms.
struct Row {
    names: Vec<ImageRef>,
    id: String,
    digest: String,
    created: Option<String>,
    size: Option<u64>,
    stored: u64,
    platforms: Vec<String>,
}

pub fn images(store: &Store, a: ImagesArgs) -> anyhow::Result<i32> {
    let mut rows = image_rows(store)?;
    rows.extend(index_rows(store)?);
    rows.sort_by(|a, b| a.names.first().cmp(&b.names.first()));
    match a.format {
        Format::Json => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "names": i.names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                        "id": i.id,
                        "digest": i.digest,
                        "created": i.created,
                        "size": i.size,
                        "stored": i.stored,
                        "platforms": i.platforms,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let mut table = vec![[
                "NAME".to_string(),
                "TAG".into(),
                "IMAGE ID".into(),
                "CREATED".into(),
                "SIZE".into(),
                "PLATFORMS".into(),
            ]];
            for i in &rows {
                let names: Vec<(String, String)> = if i.names.is_empty() {
                    vec![("<none>".into(), "<none>".into())]
                } else {
                    i.names
                        .iter()
                        .map(|n| (n.name(), n.tag().to_string()))
                        .collect()
                };
                let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
                for (n, t) in names {
                    table.push([
                        n,
                        t,
                        id.get(..12).unwrap_or(id).to_string(),
                        ago(i.created.as_deref()),
                        i.size.map(human_size).unwrap_or_else(|| "?".into()),
                        i.platforms.join(","),
                    ]);
                }
            }
            print_table(&table);
        }
    }
    Ok(0)
}

/// The rows of the store's single images.
fn image_rows(store: &Store) -> anyhow::Result<Vec<Row>> {
    let imgs = store.images()?;
    // SIZE is the content of the image's files once unpacked (as docker's): the same for an
    // image id in any store, whatever the compression of its layers there.
    // An image whose layer cannot be read (a damaged store: `strata fsck` says which) is listed
    // without a size rather than failing the listing.
    let sizes: Vec<Option<u64>> = imgs
        .iter()
        .map(|i| strata::engine::size::content(store, i).ok())
        .collect();
    Ok(imgs
        .iter()
        .zip(sizes)
        .map(|(i, size)| Row {
            names: i.names.clone(),
            id: i.id().to_string(),
            digest: i.manifest_digest.to_string(),
            created: i.config.created.clone(),
            size,
            stored: i.size(),
            platforms: vec![platform_of(i)],
        })
        .collect())
}

/// The rows of the store's image indexes: the id is the index's digest; created, size and
/// stored add up (created: the newest) over its platforms' images.
fn index_rows(store: &Store) -> anyhow::Result<Vec<Row>> {
    let mut out = Vec::new();
    for ix in store.indexes()? {
        let mut row = Row {
            names: ix.names.clone(),
            id: ix.digest.to_string(),
            digest: ix.digest.to_string(),
            created: None,
            size: Some(0),
            stored: 0,
            platforms: Vec::new(),
        };
        for p in ix.platforms() {
            row.platforms.push(p.to_string());
            let Ok(img) = store.resolve_platform(ix.digest.as_str(), Some(&p)) else {
                row.size = None;
                continue;
            };
            let size = strata::engine::size::content(store, &img).ok();
            row.size = row.size.zip(size).map(|(a, b)| a + b);
            row.stored += img.size();
            if img.config.created > row.created {
                row.created = img.config.created.clone();
            }
        }
        out.push(row);
    }
    Ok(out)
}

fn print_table(rows: &[[String; 6]]) {
    let mut w = [0usize; 6];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == w.len() - 1 {
                    c.clone()
                } else {
                    format!("{c:<width$}", width = w[i])
                }
            })
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

pub fn inspect(store: &Store, a: ImageArg) -> anyhow::Result<i32> {
    let i = store.resolve_platform(&a.image, platform_arg(a.platform.as_deref())?.as_ref())?;
    let v = serde_json::json!({
        "Id": i.id().to_string(),
        "Names": i.names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "Digest": i.manifest_digest.to_string(),
        "Platform": platform_of(&i),
        "Manifest": i.manifest,
        "Config": i.config,
    });
    let mut v = v;
    if let Some(ix) = index_of(store, &a.image)? {
        v["Index"] = ix;
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

/// For `inspect` of a name of an image index: the index's digest and platforms, and for a
/// pulled one whether it is the registry's own index (every platform of it pulled) or one the
/// store made of the platforms pulled so far, with the digest the name has at the registry.
fn index_of(store: &Store, what: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let Some((entry, index)) = store.find_index(what)? else {
        return Ok(None);
    };
    let at_registry = entry
        .annotations
        .get(strata::registry::pull::ANN_DIGEST)
        .cloned();
    Ok(Some(serde_json::json!({
        "Digest": entry.digest.to_string(),
        "Platforms": strata::store::index_platforms(&index)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        "Registry": at_registry.as_deref() == Some(entry.digest.as_str()),
        "RegistryDigest": at_registry,
    })))
}

pub fn history(store: &Store, a: ImageArg) -> anyhow::Result<i32> {
    let i = store.resolve_platform(&a.image, platform_arg(a.platform.as_deref())?.as_ref())?;
    // CONTENT is the layer's files once unpacked (docker history's SIZE); PUSH what a push
    // sends for it, ≈ when estimated (the same figures as a build's size report).
    let mut layers = i.manifest.layers.iter();
    println!(
        "{:<22} {:>10} {:>10}   CREATED BY",
        "CREATED", "CONTENT", "PUSH"
    );
    let mut rows = Vec::new();
    let mut estimated = false;
    for h in &i.config.history {
        let (size, push) = if h.empty_layer {
            (0, (0, false))
        } else {
            match layers.next() {
                Some(l) => (
                    strata::engine::size::layer_facts(store, &l.digest)?.bytes,
                    strata::engine::size::push_size(store, l)?,
                ),
                None => (0, (0, false)),
            }
        };
        estimated |= push.1;
        rows.push((
            h.created.clone().unwrap_or_default(),
            size,
            push,
            h.created_by.clone().unwrap_or_default(),
        ));
    }
    for (c, s, (p, est), by) in rows.iter().rev() {
        println!(
            "{:<22} {:>10} {:>10}   {}",
            c,
            human_size(*s),
            strata::engine::size::approx(*p, *est),
            by
        );
    }
    if estimated {
        eprintln!("(≈: estimated gzip size of a layer stored uncompressed)");
    }
    Ok(0)
}

pub fn tag(store: &Store, a: TagArgs) -> anyhow::Result<i32> {
    let target = ImageRef::parse(&a.target)?;
    store.tag(&a.source, &target)?;
    Ok(0)
}

pub fn rmi(store: &Store, a: RmiArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for i in &a.images {
        match store.remove(i) {
            Ok(names) => {
                for n in names {
                    println!("Untagged: {n}");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn prune(store: &Store, a: PruneArgs) -> anyhow::Result<i32> {
    // Snapshots and leftover steps may hold files owned by subordinate ids: remove those trees
    // inside the user namespace.
    let maps = strata::sandbox::idmap::for_current_user();
    let remove = |p: &std::path::Path| strata::engine::exec::remove_store_tree(p, &maps);
    use strata::engine::cache;
    let keep = match &a.keep_storage {
        Some(v) => strata::dockerfile::instructions::parse_size(v).ok_or_else(|| {
            anyhow::anyhow!("invalid --keep-storage \"{v}\": expected a size such as 10g or 512m")
        })?,
        None if a.cache || a.all => 0,
        None => cache::limit()?,
    };
    // The build cache first (least recently used steps out), then what nothing refers to any
    // more: blobs and snapshots of neither an image nor a step still cached. Both under the
    // gc lock: no build is between reading a record and using its layer meanwhile.
    let gc = store.gc_lock()?;
    let (mut evicted, _) = cache::evict(store, if a.all { 0 } else { keep });
    let mut freed = store.prune_keeping_locked(
        &gc,
        a.all,
        &|| {
            let u = cache::usage(store);
            Ok((u.blobs, u.diff_ids))
        },
        &remove,
    )?;
    // Records whose layers are gone are misses anyway: drop them (and the cache mounts with
    // --all).
    freed += cache::prune(store, a.all, &remove)?;
    // The steps kept from an imported cache with their layers remote take no space here: a
    // prune of the whole cache forgets them too.
    if a.all || (a.cache && keep == 0) {
        evicted += strata::engine::cache::remote::forget_remote(store);
    }
    if evicted > 0 {
        println!(
            "Build cache: {evicted} step{} dropped",
            if evicted == 1 { "" } else { "s" }
        );
    }
    println!(
        "Total reclaimed space: {} ({freed} bytes)",
        human_size(freed)
    );
    Ok(0)
}

pub fn df(store: &Store, a: DfArgs) -> anyhow::Result<i32> {
    use strata::engine::cache::{self, remote as shared};
    let c = cache::usage(store);
    let du = store.disk_usage((c.blobs.clone(), c.diff_ids.clone()))?;
    let stale = cache::stale_bytes(store);
    let mounts = cache::mounts_bytes(store);
    let remote = shared::remote_records(store);
    let reclaimable = du.reclaimable() + stale;
    if a.format == Format::Json {
        let v = serde_json::json!({
            "images": du.images,
            "blobs": {
                "total": du.blobs,
                "images": du.image_blobs,
                "build_cache_only": du.cache_only_blobs,
                "unreferenced": du.unreferenced_blobs,
            },
            "snapshots": {"total": du.snapshots, "unreferenced": du.unreferenced_snapshots},
            "build_cache": {"steps": c.records, "remote_steps": remote, "bytes": c.bytes},
            "cache_mounts": mounts,
            "temporary": du.tmp + du.debug + stale,
            "reclaimable": reclaimable,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let line = |name: &str, value: String, what: &str| {
        println!("{}", format!("{name:<20} {value:>10}   {what}").trim_end())
    };
    line("images", du.images.to_string(), "");
    line(
        "blobs",
        human_size(du.blobs),
        "every blob: the three lines below add up to it",
    );
    line(
        "  of images",
        human_size(du.image_blobs),
        "manifests, configs and layers of images",
    );
    line(
        "  of the cache only",
        human_size(du.cache_only_blobs),
        "layers of cached steps that no image has",
    );
    line(
        "  unreferenced",
        human_size(du.unreferenced_blobs),
        "nothing refers to them",
    );
    line(
        "snapshots",
        human_size(du.snapshots),
        "layers unpacked for RUN steps and strata run (remade when needed)",
    );
    line(
        "  unreferenced",
        human_size(du.unreferenced_snapshots),
        "of layers nothing refers to",
    );
    let steps = if remote > 0 {
        format!("{} steps, {remote} more with remote layers", c.records)
    } else {
        format!("{} steps", c.records)
    };
    line(
        "build cache",
        human_size(c.bytes),
        &format!("layers of its {steps} (images' too; in the blobs above)"),
    );
    line(
        "cache mounts",
        human_size(mounts),
        "RUN --mount=type=cache directories (prune --cache --all)",
    );
    line(
        "temporary",
        human_size(du.tmp + du.debug + stale),
        "interrupted writes, the failed step kept for strata debug, stale cache records",
    );
    line(
        "reclaimable",
        human_size(reclaimable),
        "what `strata prune` frees now: unreferenced blobs and snapshots, temporary",
    );
    Ok(0)
}

pub fn fsck(store: &Store) -> anyhow::Result<i32> {
    let r = store.fsck()?;
    for p in &r.problems {
        println!("problem: {}", p.0);
    }
    if r.leftovers > 0 {
        println!("note: {} leftover temporary entries from interrupted writes (harmless; `strata prune` removes them)", r.leftovers);
    }
    println!(
        "{} blobs and {} image references checked: {} problem{}",
        r.blobs_checked,
        r.images_checked,
        r.problems.len(),
        if r.problems.len() == 1 { "" } else { "s" }
    );
    Ok(if r.problems.is_empty() { 0 } else { 1 })
}

fn epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.parse().with_context(|| {
            format!("invalid SOURCE_DATE_EPOCH \"{v}\": expected seconds since 1970")
        })?)),
        _ => Ok(None),
    }
}

pub fn import(store: &Store, a: ImportArgs) -> anyhow::Result<i32> {
    let name = ImageRef::parse(&a.name)?;
    let c = Compression::parse(&a.compression).expect("clap checked the value");
    let img = store.import(&a.source, &name, c, epoch()?)?;
    println!("{}", img.id());
    Ok(0)
}

/// The images to save with the names to write for each: with `platform`, each one's image
/// for it; without, the names of image indexes go to `indexes` (saved whole).
#[allow(clippy::type_complexity)]
fn resolve_with_names(
    store: &Store,
    what: &[String],
    platform: Option<&oci::Platform>,
    indexes: &mut Vec<(oci::Descriptor, Vec<ImageRef>)>,
) -> anyhow::Result<Vec<(ImageRecord, Vec<ImageRef>)>> {
    let mut out = Vec::new();
    for w in what {
        if platform.is_none() {
            if let Some((d, _)) = store.find_index(w)? {
                let names = match ImageRef::parse(w) {
                    Ok(r) if d.annotations.get(oci::REF_NAME) == Some(&r.to_string()) => vec![r],
                    _ => Vec::new(),
                };
                indexes.push((d, names));
                continue;
            }
        }
        let img = store.resolve_platform(w, platform)?;
        let names = match ImageRef::parse(w) {
            Ok(r) if img.names.contains(&r) => vec![r],
            _ => img.names.clone(),
        };
        out.push((img, names));
    }
    Ok(out)
}

pub fn save(store: &Store, a: SaveArgs) -> anyhow::Result<i32> {
    let format = SaveFormat::parse(&a.format).expect("clap checked the value");
    let platform = platform_arg(a.platform.as_deref())?;
    let mut indexes = Vec::new();
    let images = resolve_with_names(store, &a.images, platform.as_ref(), &mut indexes)?;
    if format == SaveFormat::OciDir
        && a.output.exists()
        && !a.output.join("oci-layout").exists()
        && a.output.read_dir().is_ok_and(|mut d| d.next().is_some())
    {
        bail!(
            "{}: exists and is not an OCI layout; choose an empty or new directory",
            a.output.display()
        );
    }
    store.save_with_indexes(&images, &indexes, &a.output, format)?;
    Ok(0)
}

pub fn load(store: &Store, a: LoadArgs) -> anyhow::Result<i32> {
    let imgs = store.load(&a.input)?;
    for i in imgs {
        if i.names.is_empty() {
            println!("Loaded image ID: {}", i.id());
        }
        for n in &i.names {
            println!("Loaded image: {n}");
        }
    }
    Ok(0)
}

pub fn unpack(store: &Store, a: UnpackArgs) -> anyhow::Result<i32> {
    let img = store.resolve(&a.image)?;
    let reports = store.unpack(&img, &a.dest)?;
    let devices: Vec<&String> = reports.iter().flat_map(|r| &r.skipped_devices).collect();
    if !devices.is_empty() {
        eprintln!(
            "warning: {} device node(s) skipped (creating devices needs privileges): {}",
            devices.len(),
            devices
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let owners: u64 = reports.iter().map(|r| r.owners_not_set).sum();
    if owners > 0 {
        eprintln!("warning: {owners} file(s) keep your ownership: setting other owners needs root or a user namespace");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ago_uses_the_singular_for_one() {
        use super::ago_secs;
        assert_eq!(ago_secs(30), "just now");
        assert_eq!(ago_secs(60), "1 minute ago");
        assert_eq!(ago_secs(150), "2 minutes ago");
        assert_eq!(ago_secs(3600), "1 hour ago");
        assert_eq!(ago_secs(86_400 * 2), "2 days ago");
        assert_eq!(ago_secs(86_400 * 365 * 3), "3 years ago");
    }
}
