//! The build cache shared through a registry and an OCI layout (`--cache-to`, `--cache-from`):
//! two stores stand for two CI runners.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use super::harness::{Auth, Fault, FaultProxy, Registry};
use super::{fails, ok, text, T};

/// A builder stage whose RUN step keeps what it "downloads" in a cache mount, and a runtime
/// stage that copies the result and the app.
fn two_stage(reg: &str) -> String {
    format!(
        r#"FROM {reg}/busybox:1 AS build
COPY deps.txt /deps.txt
RUN --mount=type=cache,target=/var/cache/dl,id=dl sh -c 'for p in $(cat /deps.txt); do if [ -f /var/cache/dl/$p ]; then echo "cache hit: $p"; else echo "download: $p"; echo $p > /var/cache/dl/$p; fi; done; cat /deps.txt > /installed'
FROM {reg}/busybox:1
COPY --from=build /installed /opt/installed
COPY app.txt /app.txt
CMD ["cat", "/app.txt"]
"#
    )
}

fn context(t: &T, name: &str, reg: &str) -> std::path::PathBuf {
    let c = t.context(name, &two_stage(reg));
    fs_err::write(c.join("deps.txt"), "alpha beta\n").unwrap();
    fs_err::write(c.join("app.txt"), "v1\n").unwrap();
    c
}

fn build(t: &T, store: &str, ctx: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let meta = t.dir.join(format!("{store}-meta.json"));
    let mut args = vec![
        "build",
        "-t",
        "app",
        "--progress",
        "plain",
        "--metadata-file",
        meta.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let o = t.strata(store, &args);
    let m = fs_err::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&meta);
    (o, m)
}

/// The layers of the cache manifest at `r`, as skopeo reads it.
fn cache_layers(t: &T, r: &str) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_str(&t.skopeo_inspect(r, true, None)).unwrap();
    assert_eq!(
        m["config"]["mediaType"], "application/vnd.strata.cache.config.v1+json",
        "{m}"
    );
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn has_blob(t: &T, store: &str, digest: &str) -> bool {
    t.store(store)
        .join("v1/oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

/// A registry holding `busybox:1`, and a fault-injecting proxy in front of it; both hosts
/// are plain-HTTP registries for strata.
fn registry(t: &T) -> (Registry, FaultProxy) {
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let proxy = FaultProxy::start(reg.port);
    t.write_conf(&format!(
        "[[registry]]\nlocation = \"{}\"\ninsecure = true\n[[registry]]\nlocation = \"127.0.0.1:{}\"\ninsecure = true\n",
        reg.host(),
        proxy.port
    ));
    t.seed_busybox(&format!("{}/busybox:1", reg.host()), &[]);
    (reg, proxy)
}

#[test]
fn a_second_runner_gets_every_step_and_the_cache_mounts_from_the_registry() {
    let t = require!(T::new("cache-reg"));
    let (_reg, proxy) = registry(&t);
    let host = format!("127.0.0.1:{}", proxy.port);
    let cache = format!("{host}/cache:main");
    let to = format!("type=registry,ref={cache},mode=max,mounts=true");
    let from = format!("type=registry,ref={cache}");

    // Runner A: an empty cache to start from (a warning, not an error), then the export.
    let ctx = context(&t, "ctx-a", &host);
    let (o, meta_a) = build(&t, "a", &ctx, &["--cache-from", &from, "--cache-to", &to]);
    let err = ok(&o, "runner A") + &text(&o.stderr);
    assert!(err.contains("nothing there yet"), "{err}");
    assert!(err.contains("download: alpha"), "{err}");
    assert!(err.contains("exported the cache to"), "{err}");
    let layers = cache_layers(&t, &cache);
    // deps.txt, the RUN, /installed, app.txt, and the cache mount.
    assert_eq!(layers.len(), 5, "{layers:?}");

    // Runner B: an empty store and its own checkout. One manifest and one config request
    // import the cache; every step hits; the same image.
    let ctx_b = context(&t, "ctx-b", &host);
    let before = proxy.requests().len();
    let (o, meta_b) = build(&t, "b", &ctx_b, &["--cache-from", &from]);
    let err = text(&o.stderr);
    ok(&o, "runner B");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
    // The same image: its id, and the digest it has once pushed (B's layers are the gzip
    // blobs A exported; A compresses its own on the way out, to the same bytes).
    assert_eq!(
        meta_a["containerimage.config.digest"], meta_b["containerimage.config.digest"],
        "{meta_a} {meta_b}"
    );
    let pushed: Vec<String> = ["a", "b"]
        .iter()
        .map(|s| {
            let dest = format!("{host}/app:{s}");
            ok(&t.strata(s, &["push", "-q", "app", &dest]), "push")
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(pushed[0], pushed[1]);
    assert_eq!(meta_b["strata.cache"]["cached"], 4, "{meta_b}");
    assert_eq!(meta_b["strata.cache"]["imported"], 4, "{meta_b}");
    let reqs: Vec<String> = proxy.requests()[before..].to_vec();
    let cache_manifests = reqs
        .iter()
        .filter(|r| r.contains("/cache/manifests/"))
        .count();
    assert_eq!(cache_manifests, 1, "{reqs:?}");
    // Only the final image's two layers came; the builder's two and the mount stayed remote.
    let here: Vec<&String> = layers.iter().filter(|d| has_blob(&t, "b", d)).collect();
    assert_eq!(here.len(), 2, "{here:?} of {layers:?}");
    let cache_blob_gets = reqs
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/cache/blobs/"))
        .count();
    assert_eq!(cache_blob_gets, 3, "config and two layers: {reqs:?}");
    assert_eq!(ok(&t.strata("b", &["run", "app"]), "run on B").trim(), "v1");

    // A one-line change on B: only the last COPY runs.
    fs_err::write(ctx_b.join("app.txt"), "v2\n").unwrap();
    let (o, _) = build(&t, "b", &ctx_b, &["--cache-from", &from]);
    let err = text(&o.stderr);
    ok(&o, "code change on B");
    assert!(err.contains("(4 steps, 3 cached)"), "{err}");

    // A dependency added on B: the RUN step runs with the cache mount A filled (seeded from
    // the registry): what A downloaded is a cache hit.
    fs_err::write(ctx_b.join("deps.txt"), "alpha beta gamma\n").unwrap();
    let (o, _) = build(&t, "b", &ctx_b, &["--cache-from", &from, "--cache-to", &to]);
    let err = text(&o.stderr);
    ok(&o, "dependency change on B");
    assert!(err.contains("cache mount dl: seeded"), "{err}");
    assert!(
        err.contains("cache hit: alpha") && err.contains("cache hit: beta"),
        "{err}"
    );
    assert!(err.contains("download: gamma"), "{err}");
    // B's export merged with A's: both versions of the builder steps are there.
    let merged = cache_layers(&t, &cache);
    assert!(merged.len() > layers.len(), "{merged:?}");
    let kept = layers.iter().filter(|l| merged.contains(l)).count();
    assert_eq!(
        kept, 4,
        "A's layers but its cache mount's: {layers:?} {merged:?}"
    );

    // A third runner with a branch cache that is missing, then main's: main's is used.
    let ctx_c = context(&t, "ctx-c", &host);
    let (o, _) = build(
        &t,
        "c",
        &ctx_c,
        &[
            "--cache-from",
            &format!("{host}/cache:no-such-branch"),
            "--cache-from",
            &from,
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "runner C");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
}

#[test]
fn a_laptop_seeded_once_keeps_its_cache_without_cache_from() {
    let t = require!(T::new("cache-seed"));
    let (_reg, proxy) = registry(&t);
    let host = format!("127.0.0.1:{}", proxy.port);
    let cache = format!("{host}/cache:main");
    let ctx = context(&t, "ctx-ci", &host);
    let (o, _) = build(
        &t,
        "ci",
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    ok(&o, "CI's build");
    let layers = cache_layers(&t, &cache);
    // The laptop: seeded once from CI's cache (the builder stage's layers stay remote) ...
    let ctx_l = context(&t, "ctx-laptop", &host);
    let (o, _) = build(&t, "laptop", &ctx_l, &["--cache-from", &cache]);
    let err = text(&o.stderr);
    ok(&o, "seeding build");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
    let remote: Vec<&String> = layers
        .iter()
        .filter(|d| !has_blob(&t, "laptop", d))
        .collect();
    assert_eq!(
        remote.len(),
        2,
        "the builder stage's layers stay remote: {layers:?}"
    );
    // ... then builds without --cache-from: every step still hits, after a prune too, and
    // nothing is downloaded for it.
    for round in ["next build", "after a prune"] {
        let before = proxy.requests().len();
        let (o, meta) = build(&t, "laptop", &ctx_l, &[]);
        let err = text(&o.stderr);
        ok(&o, round);
        assert!(err.contains("(4 steps, 4 cached)"), "{round}: {err}");
        assert_eq!(
            meta["strata.cache"]["ran"],
            serde_json::json!([]),
            "{round}: {meta}"
        );
        let gets: Vec<String> = proxy.requests()[before..]
            .iter()
            .filter(|r| r.starts_with("GET "))
            .cloned()
            .collect();
        assert!(gets.is_empty(), "{round}: {gets:?}");
        ok(&t.strata("laptop", &["prune"]), "prune");
    }
    // A step that reads the builder stage fetches its layers from where they were seeded.
    let df = fs_err::read_to_string(ctx_l.join("Dockerfile")).unwrap();
    fs_err::write(
        ctx_l.join("Dockerfile"),
        df.replace("/opt/installed", "/opt/installed-again"),
    )
    .unwrap();
    let (o, _) = build(&t, "laptop", &ctx_l, &[]);
    let err = text(&o.stderr);
    ok(&o, "a step that reads the builder stage");
    // The builder's two steps hit; the changed COPY --from and the step after it run.
    assert!(err.contains("(4 steps, 2 cached)"), "{err}");
    assert!(remote.iter().all(|d| has_blob(&t, "laptop", d)), "{err}");
    assert_eq!(
        ok(
            &t.strata("laptop", &["run", "app", "cat", "/opt/installed-again"]),
            "run"
        )
        .trim(),
        "alpha beta"
    );
}

#[test]
fn min_mode_exports_the_final_image_and_inline_and_local_caches_work() {
    let t = require!(T::new("cache-min"));
    let (reg, _proxy) = registry(&t);
    let host = reg.host();
    let ctx = context(&t, "ctx", &host);
    // mode=min: the runtime stage's two steps only.
    let cache = format!("{host}/cache:min");
    let (o, _) = build(
        &t,
        "a",
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache}")],
    );
    ok(&o, "min export");
    assert_eq!(cache_layers(&t, &cache).len(), 2);
    // type=local: an OCI layout skopeo reads; a fresh store hits every step from it.
    let dir = t.dir.join("local-cache");
    let (o, meta_a) = build(
        &t,
        "a",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", dir.display()),
        ],
    );
    ok(&o, "local export");
    let m = t.skopeo_inspect_layout(&dir, "latest");
    assert_eq!(m["layers"].as_array().unwrap().len(), 4, "{m}");
    let (o, meta_b) = build(
        &t,
        "b",
        &ctx,
        &["--cache-from", &format!("type=local,src={}", dir.display())],
    );
    let err = text(&o.stderr);
    ok(&o, "local import");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
    assert_eq!(
        meta_a["containerimage.config.digest"],
        meta_b["containerimage.config.digest"]
    );
    // Exported again into the same directory with a small max-size: the oldest steps are
    // dropped, and so are the blobs no manifest refers to any more.
    fs_err::write(ctx.join("app.txt"), "v2\n").unwrap();
    let (o, _) = build(
        &t,
        "a",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max,max-size=300", dir.display()),
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "local export past max-size");
    assert!(err.contains("oldest steps dropped past max-size"), "{err}");
    let m = t.skopeo_inspect_layout(&dir, "latest");
    let layers = m["layers"].as_array().unwrap().len();
    let total: u64 = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(layers < 5 && total <= 300, "{m}");
    let blobs = fs_err::read_dir(dir.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs, layers + 2, "manifest, config and layers only");
    fs_err::write(ctx.join("app.txt"), "v1\n").unwrap();
    // compression=zstd, and a cache mount past mounts-max-size left out (said so).
    let zdir = t.dir.join("zstd-cache");
    let (o, _) = build(
        &t,
        "a",
        &ctx,
        &[
            "--cache-to",
            &format!(
                "type=local,dest={},mode=max,mounts=true,mounts-max-size=1,compression=zstd",
                zdir.display()
            ),
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "zstd export");
    assert!(
        err.contains("cache mount dl") && err.contains("left out of the export"),
        "{err}"
    );
    let m = t.skopeo_inspect_layout(&zdir, "latest");
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types, ["application/vnd.oci.image.layer.v1.tar+zstd"; 4],
        "four step layers, no cache mount: {m}"
    );
    let (o, _) = build(
        &t,
        "z",
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", zdir.display()),
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "zstd import");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
    // type=inline: the pushed image carries the records of its own steps.
    // SOURCE_DATE_EPOCH makes the builder's layers the same bytes on both runners.
    let image = format!("{host}/app:inline");
    let o = t.strata(
        "a",
        &[
            "build",
            "-t",
            &image,
            "--push",
            "--build-arg",
            "SOURCE_DATE_EPOCH=0",
            "--cache-to",
            "type=inline",
            ctx.to_str().unwrap(),
        ],
    );
    ok(&o, "inline push");
    let (o, _) = build(
        &t,
        "c",
        &ctx,
        &["--build-arg", "SOURCE_DATE_EPOCH=0", "--cache-from", &image],
    );
    let err = text(&o.stderr);
    ok(&o, "inline import");
    // The builder stage is not in an inline cache: its two steps run, the runtime's hit
    // (the builder's output is the same bytes).
    assert!(err.contains("(4 steps, 2 cached)"), "{err}");
    // Bad options are refused before anything runs, naming the option.
    let o = t.strata(
        "a",
        &[
            "build",
            "--cache-to",
            "type=registry,ref=x/y,mode=everything",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(fails(&o, "bad mode").contains("mode=everything"));
    // A tag that holds something other than a cache (here the base image, last, since it
    // stops being one) is replaced with a warning, not merged.
    let (o, _) = build(
        &t,
        "a",
        &ctx,
        &["--cache-to", &format!("type=registry,ref={host}/busybox:1")],
    );
    let err = text(&o.stderr);
    ok(&o, "export over an image");
    assert!(
        err.contains("cannot be read") && err.contains("replaced, not merged"),
        "{err}"
    );
    assert_eq!(cache_layers(&t, &format!("{host}/busybox:1")).len(), 2);
}

#[test]
fn a_killed_export_or_import_leaves_registry_and_store_consistent() {
    let t = require!(T::new("cache-kill"));
    let (_reg, proxy) = registry(&t);
    let host = format!("127.0.0.1:{}", proxy.port);
    let cache = format!("{host}/cache:main");
    let to = format!("type=registry,ref={cache},mode=max,mounts=true");
    let ctx = context(&t, "ctx", &host);
    let (o, _) = build(&t, "a", &ctx, &["--cache-to", &to]);
    ok(&o, "first export");
    let first = cache_layers(&t, &cache);

    // Killed while its manifest is on the way: the tag still names the first cache.
    fs_err::write(ctx.join("app.txt"), "v2\n").unwrap();
    proxy.add(
        "PUT",
        "/cache/manifests/",
        1,
        Fault::Delay(Duration::from_secs(30)),
    );
    // (The first export's requests are in the log too: only this build's count.)
    let seen = proxy.requests().len();
    kill_when(&t, "a", &ctx, &["--cache-to", &to], || {
        proxy.requests()[seen..]
            .iter()
            .any(|r| r.starts_with("PUT ") && r.contains("/cache/manifests/"))
    });
    assert_eq!(cache_layers(&t, &cache), first);
    let (o, _) = build(&t, "a", &ctx, &["--cache-to", &to]);
    let err = text(&o.stderr);
    ok(&o, "export after the kill");
    assert!(err.contains("exported the cache"), "{err}");
    let second = cache_layers(&t, &cache);
    assert_ne!(second, first);

    // Killed while a layer comes in: the store has no partial blob, and the next import works.
    proxy.add(
        "GET",
        "/cache/blobs/",
        1,
        Fault::Delay(Duration::from_secs(30)),
    );
    let from = format!("type=registry,ref={cache}");
    let ctx_b = context(&t, "ctx-b", &host);
    fs_err::write(ctx_b.join("app.txt"), "v2\n").unwrap();
    let seen = proxy.requests().len();
    kill_when(&t, "b", &ctx_b, &["--cache-from", &from], || {
        proxy.requests()[seen..]
            .iter()
            .any(|r| r.starts_with("GET ") && r.contains("/cache/blobs/"))
    });
    let fsck = t.strata("b", &["fsck"]);
    ok(&fsck, "fsck after the killed import");
    let (o, _) = build(&t, "b", &ctx_b, &["--cache-from", &from]);
    let err = text(&o.stderr);
    ok(&o, "import after the kill");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
}

/// Start a build, wait until `ready`, SIGKILL it.
fn kill_when(t: &T, store: &str, ctx: &Path, extra: &[&str], ready: impl Fn() -> bool) {
    let mut args = vec!["build", "-t", "app", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let mut child = t
        .cmd_in(&t.store(store), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the build never reached the point to kill it"
        );
        if let Ok(Some(s)) = child.try_wait() {
            panic!("the build ended ({s}) before the point to kill it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _ = child.kill();
    let _ = child.wait();
}

/// `git clone` of `src` into `dest` under `umask`.
fn clone_under(src: &Path, dest: &Path, umask: &str) {
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && git clone -q \"$0\" \"$1\"",))
        .arg(src)
        .arg(dest)
        .env("HOME", dest.parent().unwrap())
        .output()
        .unwrap();
    ok(&o, "git clone");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs_err::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn two_checkouts_under_different_umasks_share_the_cache() {
    let t = require!(T::new("cache-umask"));
    require!(super::have("git"), "git is not installed (package git)");
    let (reg, _proxy) = registry(&t);
    let host = reg.host();
    // The repository: the two-stage Dockerfile, its files, a script with the executable bit.
    let repo = context(&t, "repo", &host);
    fs_err::write(repo.join("Dockerfile"), two_stage(&host) + "COPY . /src\n").unwrap();
    fs_err::write(repo.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs_err::write(repo.join(".dockerignore"), ".git\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
            .arg(&repo)
            .args(args)
            .env("HOME", &t.dir)
            .output()
            .unwrap();
        ok(&o, &format!("git {args:?}"));
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "app"]);
    let a = t.dir.join("checkout-a");
    let b = t.dir.join("checkout-b");
    clone_under(&repo, &a, "022");
    clone_under(&repo, &b, "002");
    assert_eq!(mode(&a.join("app.txt")), 0o644);
    assert_eq!(mode(&b.join("app.txt")), 0o664);
    assert_eq!(mode(&b.join("run.sh")), 0o775);
    let cache = format!("{host}/cache:umask");
    let (o, _) = build(
        &t,
        "a",
        &a,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    ok(&o, "runner A");
    let (o, _) = build(
        &t,
        "b",
        &b,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    let err = text(&o.stderr);
    ok(&o, "runner B");
    assert!(err.contains("(5 steps, 5 cached)"), "{err}");
    // A file whose executable bit differs is another context.
    {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(b.join("app.txt"), std::fs::Permissions::from_mode(0o775)).unwrap();
    }
    let (o, _) = build(
        &t,
        "b",
        &b,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    let err = text(&o.stderr);
    ok(&o, "runner B, app.txt executable");
    assert!(err.contains("(5 steps, 3 cached)"), "{err}");
}

#[test]
fn a_cache_of_2000_steps_round_trips() {
    let t = require!(T::new("cache-2000"));
    let (reg, _proxy) = registry(&t);
    let host = reg.host();
    // 20 stages of a COPY and 99 WORKDIR steps each, and 20 COPY --from: 2,020 records, 40
    // layers. (Docker stops a stage at 127 layers, so the steps are spread over stages.)
    let mut df = String::new();
    for s in 0..20 {
        df.push_str(&format!("FROM {host}/busybox:1 AS s{s}\nCOPY f{s} /f\n"));
        for _ in 0..99 {
            df.push_str("WORKDIR /\n");
        }
    }
    df.push_str(&format!("FROM {host}/busybox:1\n"));
    for s in 0..20 {
        df.push_str(&format!("COPY --from=s{s} /f /f{s}\n"));
    }
    let ctx = t.context("ctx", &df);
    for s in 0..20 {
        fs_err::write(ctx.join(format!("f{s}")), format!("{s}\n")).unwrap();
    }
    let cache = format!("{host}/cache:big");
    let (o, _) = build(
        &t,
        "a",
        &ctx,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    let err = text(&o.stderr);
    ok(&o, "runner A");
    assert!(err.contains(": 2020 steps, 0 cache mounts"), "{err}");
    let (o, _) = build(
        &t,
        "b",
        &ctx,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    let err = text(&o.stderr);
    ok(&o, "runner B");
    assert!(err.contains(": 2020 steps, 0 cache mounts"), "{err}");
    assert!(err.contains("(40 steps, 40 cached)"), "{err}");
}

/// The manifest tagged `latest` in the layout `dir`, its descriptor's index in index.json, and
/// its config.
fn layout_cache(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    let idx: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        fs_err::read(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let m: serde_json::Value = serde_json::from_slice(&blob(d)).unwrap();
    let c: serde_json::Value =
        serde_json::from_slice(&blob(m["config"]["digest"].as_str().unwrap())).unwrap();
    (m, c)
}

/// Rewrite the cache config of the layout `dir` with `edit`, and its manifest and index after it.
fn edit_layout_cache(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let (mut m, mut c) = layout_cache(dir);
    edit(&mut c);
    let put = |bytes: &[u8]| {
        let hex = super::hex_sha256(bytes);
        fs_err::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (cd, cs) = put(&serde_json::to_vec(&c).unwrap());
    m["config"]["digest"] = cd.into();
    m["config"]["size"] = cs.into();
    let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
    let p = dir.join("index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&fs_err::read(&p).unwrap()).unwrap();
    idx["manifests"][0]["digest"] = md.into();
    idx["manifests"][0]["size"] = ms.into();
    fs_err::write(&p, serde_json::to_vec(&idx).unwrap()).unwrap();
}

/// Flip a byte in the middle of the blob `digest` of the layout `dir`.
fn damage_blob(dir: &Path, digest: &str) {
    let p = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut b = fs_err::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    fs_err::write(&p, b).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

fn fsck_clean(t: &T, store: &str) {
    let out = ok(&t.strata(store, &["fsck"]), "fsck");
    assert!(out.contains(" 0 problems"), "{store}: {out}");
}

#[test]
fn a_local_cache_that_is_damaged_or_lies_is_skipped_and_the_steps_run() {
    let t = require!(T::new("cache-lies"));
    let (reg, _proxy) = registry(&t);
    let host = reg.host();
    let ctx = context(&t, "ctx", &host);
    let good = t.dir.join("good");
    let (o, _) = build(
        &t,
        "a",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max,mounts=true", good.display()),
        ],
    );
    ok(&o, "export");
    let (m, c) = layout_cache(&good);
    let layers: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 5, "{m}");
    let check = |store: &str, what: &str, o: &Output| -> String {
        let err = text(&o.stderr);
        ok(o, what);
        assert_eq!(
            ok(
                &t.strata(store, &["run", "app", "cat", "/app.txt", "/opt/installed"]),
                what
            ),
            "v1\nalpha beta\n",
            "{what}"
        );
        fsck_clean(&t, store);
        err
    };

    // A cache whose config gives each layer the diffID of another (its blobs are whole): the
    // build said "cached" and stored an image that failed `run` and `fsck`. Now its first
    // layer needed fails its check, and the build starts again without that cache.
    let lie = t.dir.join("lie");
    copy_dir(&good, &lie);
    edit_layout_cache(&lie, |c| {
        let ids = c["diffIds"].as_array_mut().unwrap();
        ids.rotate_left(1);
    });
    let from_lie = format!("type=local,src={}", lie.display());
    let (o, meta) = build(&t, "b", &ctx, &["--cache-from", &from_lie]);
    let err = check("b", "a lying cache", &o);
    assert!(
        err.contains("not the diffID") && err.contains("the build starts again without the cache"),
        "{err}"
    );
    assert_eq!(meta["strata.cache"]["imported"], 0, "{meta}");
    // The same lie about layers the store already holds (store a has the image; its step
    // records dropped): each record is checked against the blob, found wrong, and its step
    // runs.
    ok(&t.strata("a", &["prune", "--cache"]), "prune --cache");
    let (o, _) = build(&t, "a", &ctx, &["--cache-from", &from_lie]);
    let err = check("a", "a lying cache over blobs the store has", &o);
    assert!(
        err.contains("not the diffID") || err.contains("its content is"),
        "{err}"
    );

    // A damaged blob (one byte flipped): refused as it is copied; the steps run.
    let damaged = t.dir.join("damaged");
    copy_dir(&good, &damaged);
    for l in &layers {
        damage_blob(&damaged, l);
    }
    let (o, _) = build(
        &t,
        "c",
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", damaged.display()),
        ],
    );
    let err = check("c", "a damaged cache", &o);
    assert!(
        err.contains("nothing was stored") && err.contains("the build starts again"),
        "{err}"
    );

    // A damaged cache mount's layer: the mount starts empty (a warning), the step runs.
    let bad_mount = t.dir.join("bad-mount");
    copy_dir(&good, &bad_mount);
    let mount_layer = c["mounts"][0]["layer"].as_u64().unwrap() as usize;
    damage_blob(&bad_mount, &layers[mount_layer]);
    let ctx2 = context(&t, "ctx2", &host);
    fs_err::write(ctx2.join("deps.txt"), "alpha beta gamma\n").unwrap();
    let (o, _) = build(
        &t,
        "d",
        &ctx2,
        &[
            "--cache-from",
            &format!("type=local,src={}", bad_mount.display()),
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "a damaged cache mount");
    assert!(
        err.contains("cache mount dl: the imported content cannot be used")
            && err.contains("download: alpha"),
        "{err}"
    );
    fsck_clean(&t, "d");

    // The good cache still gives every step.
    let (o, _) = build(
        &t,
        "e",
        &ctx,
        &[
            "--cache-from",
            &format!("type=local,src={}", good.display()),
        ],
    );
    let err = check("e", "the good cache", &o);
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
}

/// A step kept from an earlier `--cache-from` whose layer stayed remote (`v1/cache-remote`) is
/// taken on no more trust than the import itself: when a later build without `--cache-from`
/// needs that layer and the place it was seeded from now holds damaged bytes, the build
/// forgets the steps kept with it, says so, and runs them; the image and the store are sound.
#[test]
fn a_remembered_step_whose_layer_went_bad_is_forgotten_and_runs() {
    let t = require!(T::new("cache-remembered-bad"));
    let (reg, _proxy) = registry(&t);
    let host = reg.host();
    let ctx = context(&t, "ctx", &host);
    let dir = t.dir.join("ci-cache");
    let (o, _) = build(
        &t,
        "ci",
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", dir.display()),
        ],
    );
    ok(&o, "CI's export");
    // The laptop is seeded once: the builder stage's layers stay in the layout.
    let ctx_l = context(&t, "ctx-laptop", &host);
    let from = format!("type=local,src={}", dir.display());
    let (o, _) = build(&t, "laptop", &ctx_l, &["--cache-from", &from]);
    let err = text(&o.stderr);
    ok(&o, "seeding build");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
    let (m, _) = layout_cache(&dir);
    let remote: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .filter(|d| !has_blob(&t, "laptop", d))
        .collect();
    assert!(!remote.is_empty(), "some layers stay remote: {m}");
    // Where they were seeded from goes bad.
    for d in &remote {
        damage_blob(&dir, d);
    }
    // A step that reads the builder stage needs its layers: the kept steps are forgotten and
    // run here instead of failing the build.
    let df = fs_err::read_to_string(ctx_l.join("Dockerfile")).unwrap();
    fs_err::write(
        ctx_l.join("Dockerfile"),
        df.replace("/opt/installed", "/opt/installed-again"),
    )
    .unwrap();
    let (o, _) = build(&t, "laptop", &ctx_l, &[]);
    let err = text(&o.stderr);
    ok(&o, "a build that needs a bad remembered layer");
    assert!(
        err.contains("where an earlier --cache-from found it")
            && err.contains("the build starts again without the steps kept with it"),
        "{err}"
    );
    assert_eq!(
        ok(
            &t.strata("laptop", &["run", "app", "cat", "/opt/installed-again"]),
            "run"
        )
        .trim(),
        "alpha beta"
    );
    fsck_clean(&t, "laptop");
    // Nothing of that cache is remembered any more: the next build hits the local cache only.
    let (o, _) = build(&t, "laptop", &ctx_l, &[]);
    let err = text(&o.stderr);
    ok(&o, "the build after");
    assert!(err.contains("(4 steps, 4 cached)"), "{err}");
}
