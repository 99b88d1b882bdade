//! The Python recipes of examples/, each built from a python base pulled through a local
//! Docker Hub mirror (the Debian-made image of scripts/test-deps.sh), as root and (by `make
//! test`'s second run) as the unprivileged user strata-test. For each: the app runs as its user
//! with HOME right; a one-line code change reruns no dependency step; a dependency change reruns
//! the install and the tool reports what it had cached; the runtime image has no package cache,
//! compiler or build tool, no size hint, and is within 2% of its content. How fast the code
//! change rebuilds is measured by benches/python.sh, not timed here.

use super::*;

/// The Debian-made python image, or None (said) when test-deps.sh has not made it.
fn python_layout() -> Option<PathBuf> {
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci/python");
    if !layout.join("index.json").exists() {
        crate::support::skip(&format!(
            "{} is missing: scripts/test-deps.sh makes it with ../shared/lab/make-base-images.sh",
            layout.display()
        ));
        return None;
    }
    Some(layout)
}

/// A registry serving the python base as docker.io's python:3.11-slim, through a mirror.
pub(super) fn python_world(name: &str) -> Option<(T, Registry)> {
    let layout = python_layout()?;
    let t = T::new(name)?;
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    t.seed(
        &format!("oci:{}:latest", layout.display()),
        &format!("{h}/library/python:3.11-slim"),
        &[],
    );
    t.mirror_conf(std::slice::from_ref(&h), "");
    Some((t, reg))
}

/// A copy of examples/`example` in the test's directory (the recipes are edited there).
fn example(t: &T, example: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(example);
    let to = t.dir.join(example.replace('/', "-"));
    let o = Command::new("cp")
        .arg("-r")
        .arg(&from)
        .arg(&to)
        .output()
        .unwrap();
    ok(&o, "copying the example");
    to
}

fn added(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(file)
}

/// Build with plain progress; the progress output.
fn build(t: &T, tag: &str, ctx: &Path) -> String {
    let o = t.build("s", tag, ctx);
    ok(&o, &format!("build of {}", ctx.display()));
    text(&o.stderr)
}

/// The instructions of the steps a build ran (not from the cache), from its plain progress.
fn ran(progress: &str) -> Vec<String> {
    let mut titles: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for line in progress.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((n, what)) = rest.split_once(' ') else {
            continue;
        };
        if what.starts_with('[') {
            titles.push((n.to_string(), what.to_string()));
        } else if what.starts_with("cache miss") {
            if let Some((_, title)) = titles.iter().find(|(m, _)| m == n) {
                out.push(title.clone());
            }
        }
    }
    out
}

/// What every recipe's image must be: the app's greeting as `app` with HOME=/home/app, no
/// package cache, compiler, build tool or C headers, no size hint, and its layers within 2% of
/// the files it holds.
fn check_image(t: &T, tag: &str, ctx: &Path, progress: &str, greeting: &str) {
    let out = ok(&t.strata("s", &["run", tag]), "run the app");
    assert!(out.contains(greeting), "{out}");
    let who = ok(
        &t.strata("s", &["run", tag, "sh", "-c", "id -un; echo $HOME"]),
        "user and HOME",
    );
    assert_eq!(who, "app\n/home/app\n");
    let tools = t.strata(
        "s",
        &[
            "run",
            "-u",
            "0",
            tag,
            "sh",
            "-c",
            "for c in gcc cc c++ uv poetry pip-compile; do command -v $c; done; \
             ls -A /root/.cache /home/app/.cache /var/cache/apt/archives/*.deb 2>/dev/null; \
             ls /usr/include | wc -l",
        ],
    );
    assert_eq!(ok(&tools, "tools and caches"), "0\n", "{tag}");
    assert!(
        !progress.contains("\nhint: "),
        "{tag}: the size report has hints:\n{progress}"
    );
    // The layers' content against the files of the image (hard links once, mounts left out).
    let walk = t.strata(
        "s",
        &[
            "run",
            "-u",
            "0",
            tag,
            "python3",
            "-c",
            "import os\n\
             dev = os.lstat('/').st_dev\n\
             seen, total = set(), 0\n\
             for d, dirs, files in os.walk('/'):\n\
             \x20   dirs[:] = [x for x in dirs if os.lstat(os.path.join(d, x)).st_dev == dev]\n\
             \x20   for f in files:\n\
             \x20       s = os.lstat(os.path.join(d, f))\n\
             \x20       if s.st_dev == dev and os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)) and (s.st_dev, s.st_ino) not in seen:\n\
             \x20           seen.add((s.st_dev, s.st_ino)); total += s.st_size\n\
             print(total)",
        ],
    );
    let files: f64 = ok(&walk, "the image's files").trim().parse().unwrap();
    let content = layers_content(t, tag, ctx);
    let ratio = content / files;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "{tag}: layers hold {content} bytes of content for {files} bytes of files ({ratio:.4})"
    );
}

/// The bytes of file content in `tag`'s layers, from the size report of a (no-op) rebuild
/// with JSON progress.
fn layers_content(t: &T, tag: &str, ctx: &Path) -> f64 {
    let o = t.strata(
        "s",
        &[
            "build",
            "--progress",
            "json",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ],
    );
    ok(&o, "a rebuild with JSON progress");
    let err = text(&o.stderr);
    let report = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "size-report")
        .unwrap_or_else(|| panic!("no size report:\n{err}"));
    report["report"]["content"].as_f64().unwrap()
}

/// The recipe's steps that must come from the cache after a code change.
fn no_dependency_step_ran(progress: &str, deps: &[&str]) {
    let ran = ran(progress);
    assert!(!ran.is_empty(), "the code change ran nothing:\n{progress}");
    for r in &ran {
        assert!(
            !deps.iter().any(|d| r.contains(d)),
            "a code change reran a dependency step: {r}\n{progress}"
        );
    }
}

/// Whether PyPI's answers, as a RUN step gets them, say they may be cached: this lab's
/// intercepting proxy strips Cache-Control, ETag and Last-Modified, and pip's HTTP cache (the
/// only one that holds downloaded wheels) then stores nothing. Asked from `image`, over the
/// network a RUN step has.
fn pypi_answers_are_cacheable(t: &T, image: &str) -> bool {
    let o = t.strata(
        "s",
        &[
            "run",
            image,
            "python3",
            "-c",
            "import urllib.request\n\
             r = urllib.request.urlopen(urllib.request.Request('https://pypi.org/simple/six/', method='HEAD'))\n\
             print('yes' if any(r.headers.get(h) for h in ('Cache-Control', 'ETag', 'Last-Modified')) else 'no')",
        ],
    );
    ok(&o, "asking PyPI for its caching headers").trim() == "yes"
}

/// pip's report after a dependency change: "Using cached" for what it had downloaded, where
/// PyPI's answers can be cached; where they cannot (this lab), pip must download again, and
/// the test says so.
fn pip_reports_its_cache(t: &T, image: &str, progress: &str) {
    if pypi_answers_are_cacheable(t, image) {
        assert!(progress.contains("Using cached six-"), "{progress}");
    } else {
        assert!(progress.contains("Downloading six-"), "{progress}");
        eprintln!(
            "NOT CHECKED: pip's cache hits from PyPI (its answers reach RUN steps here without caching headers, so pip caches no download; recipe_pip_template_reuses_pips_cache checks them against a local index that sends PyPI's headers)"
        );
    }
}

/// Append one line to the app's code file `file` of the context `c` and rebuild `tag`: no step
/// whose title holds one of `deps` may run.
fn code_change_reruns_no_dependency_step(t: &T, tag: &str, c: &Path, file: &str, deps: &[&str]) {
    let f = c.join(file);
    let code = fs_err::read_to_string(&f).unwrap();
    fs_err::write(&f, format!("{code}\n# one more line\n")).unwrap();
    no_dependency_step_ran(&build(t, tag, c), deps);
}

fn dependency_step_ran(progress: &str, dep: &str) {
    let ran = ran(progress);
    assert!(
        ran.iter().any(|r| r.contains(dep)),
        "a dependency change did not rerun `{dep}`; it ran {ran:#?}:\n{progress}"
    );
}

#[test]
fn recipe_pip_template() {
    let Some((t, _reg)) = python_world("r-pip") else {
        return;
    };
    let c = example(&t, "python-app");
    let p = build(&t, "app", &c);
    check_image(&t, "app", &c, &p, "hello from strata: Python 3.11");
    code_change_reruns_no_dependency_step(&t, "app", &c, "hello_app/__main__.py", &["pip install"]);
    fs_err::write(c.join("requirements.txt"), "six==1.16.0\nidna==3.10\n").unwrap();
    let p = build(&t, "app", &c);
    dependency_step_ran(&p, "source=requirements.txt");
    pip_reports_its_cache(&t, "app", &p);
    ok(
        &t.strata("s", &["run", "app", "python3", "-c", "import idna"]),
        "the added dependency",
    );
}

/// `wheel` of `project` from PyPI, as its simple index links it, checked against the index's
/// sha256: (file name, sha256, bytes).
fn wheel_from_pypi(t: &T, project: &str, wheel: &str) -> (String, String, Vec<u8>) {
    let page = Command::new("curl")
        .args(["-sSfL", &format!("https://pypi.org/simple/{project}/")])
        .output()
        .unwrap();
    let page = ok(&page, "PyPI's simple index");
    let link = page
        .split("href=\"")
        .skip(1)
        .filter_map(|l| l.split('"').next())
        .find(|l| l.contains(&format!("/{wheel}#sha256=")))
        .unwrap_or_else(|| panic!("{wheel} is not on PyPI's index of {project}"));
    let (url, sha) = link.split_once("#sha256=").unwrap();
    let file = t.dir.join(wheel);
    let o = Command::new("curl")
        .args(["-sSfL", "-o"])
        .arg(&file)
        .arg(url)
        .output()
        .unwrap();
    ok(&o, &format!("downloading {wheel}"));
    let bytes = fs_err::read(&file).unwrap();
    assert_eq!(hex_sha256(&bytes), sha, "{wheel} from {url}");
    (wheel.to_string(), sha.to_string(), bytes)
}

/// pip's cache hits through Docker's pip template, where this lab lets them happen: PyPI's
/// answers reach RUN steps here without caching headers, so the recipe tests cannot see pip
/// reuse a download. Here pip's index is a local one that sends PyPI's caching headers, on the
/// host's own address (a RUN step reaches it through its private network), and the template
/// is as written but for one line: `ARG PIP_INDEX_URL PIP_TRUSTED_HOST`, so that two build
/// arguments point pip at it. After the dependency change, pip says it used its cached six,
/// and the index saw six downloaded once over both builds.
#[test]
fn recipe_pip_template_reuses_pips_cache() {
    let Some((t, _reg)) = python_world("r-pip-cache") else {
        return;
    };
    // The index listens on the host's loopback only (test traffic stays on 127.0.0.0/8); the
    // build's RUN steps get the host's network to reach it.
    let six = "six-1.16.0-py2.py3-none-any.whl";
    let idna = "idna-3.10-py3-none-any.whl";
    let index = PackageIndex::start(
        std::net::Ipv4Addr::LOCALHOST.into(),
        vec![
            wheel_from_pypi(&t, "six", six),
            wheel_from_pypi(&t, "idna", idna),
        ],
    );
    let c = example(&t, "python-app");
    let df = fs_err::read_to_string(c.join("Dockerfile")).unwrap();
    let install = "RUN --mount=type=cache,target=/root/.cache/pip";
    assert_eq!(df.matches(install).count(), 1, "{df}");
    let df = df.replace(
        install,
        &format!("ARG PIP_INDEX_URL PIP_TRUSTED_HOST\n{install}"),
    );
    fs_err::write(c.join("Dockerfile"), df).unwrap();
    let build = |what: &str| -> String {
        let o = t.strata(
            "s",
            &[
                "build",
                "--progress",
                "plain",
                "--build-arg",
                &format!("PIP_INDEX_URL={}", index.url),
                "--build-arg",
                &format!("PIP_TRUSTED_HOST={}", index.host()),
                "--network",
                "host",
                "--allow",
                "network.host",
                "-t",
                "app",
                c.to_str().unwrap(),
            ],
        );
        ok(&o, what);
        text(&o.stderr)
    };
    let p = build("the pip template against the local index");
    assert!(
        p.contains(&format!("/files/{six}")),
        "pip did not use the index:\n{p}"
    );
    assert_eq!(index.downloads(six), 1, "{p}");
    fs_err::write(c.join("requirements.txt"), "six==1.16.0\nidna==3.10\n").unwrap();
    let p = build("the pip template after a dependency change");
    dependency_step_ran(&p, "source=requirements.txt");
    let cached = format!("Using cached http://{}/files/{six}", index.host());
    assert!(p.contains(&cached), "no `{cached}`:\n{p}");
    assert_eq!(index.downloads(six), 1, "six was downloaded again:\n{p}");
    assert_eq!(index.downloads(idna), 1, "{p}");
    ok(
        &t.strata("s", &["run", "app", "python3", "-c", "import idna, six"]),
        "both dependencies",
    );
}

#[test]
fn recipe_uv() {
    let Some((t, _reg)) = python_world("r-uv") else {
        return;
    };
    let c = example(&t, "python-uv");
    let p = build(&t, "uvapp", &c);
    check_image(&t, "uvapp", &c, &p, "hello from uv: Python 3.11");
    code_change_reruns_no_dependency_step(
        &t,
        "uvapp",
        &c,
        "src/hello_uv/__init__.py",
        &["source=uv.lock"],
    );
    for f in ["pyproject.toml", "uv.lock"] {
        fs_err::copy(added(&format!("uv-added/{f}")), c.join(f)).unwrap();
    }
    let p = build(&t, "uvapp", &c);
    dependency_step_ran(&p, "source=uv.lock");
    // six came from uv's cache: only idna was fetched.
    assert!(p.contains("Prepared 1 package"), "{p}");
    ok(
        &t.strata("s", &["run", "uvapp", "python3", "-c", "import idna"]),
        "the added dependency",
    );
}

/// Astral's `COPY --from=ghcr.io/astral-sh/uv` works as written when a registry serves it: a
/// uv image made here (the binary of the PyPI wheel, FROM scratch) and pushed to a local
/// registry that registries.conf makes ghcr.io's mirror.
#[test]
fn recipe_uv_copies_uv_from_its_image() {
    let Some((t, reg)) = python_world("r-uvimg") else {
        return;
    };
    let h = reg.host();
    t.mirror_conf(
        std::slice::from_ref(&h),
        &format!(
            "[[registry]]\nprefix = \"ghcr.io\"\nlocation = \"ghcr.io\"\n[[registry.mirror]]\nlocation = \"{h}\"\ninsecure = true\n"
        ),
    );
    let img = t.context(
        "uvimage",
        "FROM python:3.11-slim AS get\nRUN --mount=type=cache,target=/root/.cache/pip python3 -m venv /v && /v/bin/pip install --disable-pip-version-check uv==0.13.9\nFROM scratch\nCOPY --from=get /v/bin/uv /v/bin/uvx /\n",
    );
    let r = format!("{h}/astral-sh/uv:0.13.9");
    ok(&t.build("s", &r, &img), "build the uv image");
    ok(&t.strata("s", &["push", &r]), "push the uv image");
    let c = example(&t, "python-uv");
    let df = fs_err::read_to_string(c.join("Dockerfile")).unwrap();
    let start = df
        .find("RUN --mount=type=cache,target=/root/.cache/pip")
        .unwrap();
    let end =
        df[start..].find("/usr/local/bin/uv\n").unwrap() + start + "/usr/local/bin/uv\n".len();
    let df = format!(
        "{}COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/\n{}",
        &df[..start],
        &df[end..]
    );
    fs_err::write(c.join("Dockerfile"), &df).unwrap();
    // A store that has never seen the uv image: it comes through the mirror.
    ok(
        &t.build("s2", "uvapp", &c),
        "the uv recipe with COPY --from=ghcr.io/astral-sh/uv",
    );
    let out = ok(&t.strata("s2", &["run", "uvapp"]), "run");
    assert!(out.contains("hello from uv"), "{out}");
}

#[test]
fn recipe_pip_tools() {
    let Some((t, _reg)) = python_world("r-piptools") else {
        return;
    };
    let c = example(&t, "python-piptools");
    let p = build(&t, "pt", &c);
    check_image(&t, "pt", &c, &p, "hello from pip-tools: Python 3.11");
    code_change_reruns_no_dependency_step(
        &t,
        "pt",
        &c,
        "hello_piptools/__main__.py",
        &["pip install", "requirements.txt"],
    );
    fs_err::copy(
        added("piptools-added/requirements.txt"),
        c.join("requirements.txt"),
    )
    .unwrap();
    let p = build(&t, "pt", &c);
    dependency_step_ran(&p, "--require-hashes");
    pip_reports_its_cache(&t, "pt", &p);
}

#[test]
fn recipe_onbuild() {
    let Some((t, _reg)) = python_world("r-onbuild") else {
        return;
    };
    let parent = example(&t, "python-onbuild/parent");
    build(&t, "strata-examples/python-onbuild", &parent);
    let c = example(&t, "python-onbuild/app");
    let df = fs_err::read_to_string(c.join("Dockerfile")).unwrap();
    assert_eq!(df.lines().count(), 2, "{df}");
    let p = build(&t, "ob", &c);
    check_image(&t, "ob", &c, &p, "hello from onbuild: Python 3.11");
    code_change_reruns_no_dependency_step(
        &t,
        "ob",
        &c,
        "hello_onbuild/__main__.py",
        &["pip install"],
    );
    fs_err::write(c.join("requirements.txt"), "six\nidna\n").unwrap();
    let p = build(&t, "ob", &c);
    dependency_step_ran(&p, "pip install -r");
    pip_reports_its_cache(&t, "ob", &p);
}

#[test]
fn recipe_compiled_extension() {
    let Some((t, _reg)) = python_world("r-ext") else {
        return;
    };
    let c = example(&t, "python-extension");
    let p = build(&t, "ext", &c);
    check_image(&t, "ext", &c, &p, "hello from a C extension: total 5050");
    code_change_reruns_no_dependency_step(
        &t,
        "ext",
        &c,
        "hello_ext.py",
        &["apt-get", "pip wheel", "pip install"],
    );
    fs_err::copy(
        added("extension-added/requirements.txt"),
        c.join("requirements.txt"),
    )
    .unwrap();
    let p = build(&t, "ext", &c);
    dependency_step_ran(&p, "pip wheel --wheel-dir /wheels -r");
    pip_reports_its_cache(&t, "ext", &p);
    assert!(
        !ran(&p).iter().any(|r| r.contains("apt-get")),
        "apt reran:\n{p}"
    );
}

/// Two CI runners: A builds Astral's uv recipe and exports its cache, steps and cache mounts,
/// to the registry; B, an empty store with a checkout of its own, gets every step from it and
/// the same image, reruns only the project's steps after a code change, and after a dependency
/// change finds what A downloaded in the uv cache it was seeded with.
#[test]
fn recipe_uv_shared_between_two_runners() {
    let Some((t, reg)) = python_world("r-uv-ci") else {
        return;
    };
    let cache = format!("{}/cache/uv:main", reg.host());
    let runner = |store: &str, ctx: &Path, extra: &[&str]| -> (String, String) {
        let iid = t.dir.join(format!("{store}.iid"));
        let mut args = vec![
            "build",
            "-t",
            "uvapp",
            "--progress",
            "plain",
            "--iidfile",
            iid.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        let o = t.strata(store, &args);
        ok(&o, &format!("build in {store}"));
        (text(&o.stderr), fs_err::read_to_string(&iid).unwrap())
    };
    let to = format!("type=registry,ref={cache},mode=max,mounts=true");
    let from = format!("type=registry,ref={cache}");
    let a = example(&t, "python-uv");
    let (_, id_a) = runner("a", &a, &["--cache-to", &to]);
    let b = t.dir.join("checkout-b");
    let o = std::process::Command::new("cp")
        .arg("-r")
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    ok(&o, "cp");
    let (p, id_b) = runner("b", &b, &["--cache-from", &from]);
    assert!(ran(&p).is_empty(), "every step from A's cache: {p}");
    assert_eq!(id_a, id_b, "the same image");
    // A one-line code change: the project's steps only.
    let f = b.join("src/hello_uv/__init__.py");
    let mut code = fs_err::read_to_string(&f).unwrap();
    code.push_str("# changed on B\n");
    fs_err::write(&f, code).unwrap();
    let (p, _) = runner("b", &b, &["--cache-from", &from]);
    no_dependency_step_ran(&p, &["source=uv.lock"]);
    // The project's `uv sync` is the first step B runs with the uv cache: seeded from A's.
    assert!(p.contains("cache mount /root/.cache/uv: seeded"), "{p}");
    // A dependency added: the dependency step runs on B with the uv cache A filled.
    for f in ["pyproject.toml", "uv.lock"] {
        fs_err::copy(added(&format!("uv-added/{f}")), b.join(f)).unwrap();
    }
    let (p, _) = runner("b", &b, &["--cache-from", &from]);
    dependency_step_ran(&p, "source=uv.lock");
    assert!(p.contains("Prepared 1 package"), "six from A's cache: {p}");
}
