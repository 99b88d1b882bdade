//! The `strata` binary. Start-up order matters: the hidden sandbox-child entry (with the
//! engine's hooks) must run before any thread exists; then the command line is parsed; errors become exit codes
//! in one place.

mod cli;

fn main() {
    // The sandbox child: before anything else, while this process has one thread.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(strata::sandbox::CHILD_ARG))
    {
        strata::sandbox::child_main(&strata::engine::hooks::hook);
    }
    // STRATA_PROC=host gives RUN steps the container's /proc: this process (its environment,
    // where --secret env= values are, and its memory) is made non-dumpable, so its /proc
    // entries are root's and a step cannot read them.
    if std::env::var("STRATA_PROC").as_deref() == Ok("host") {
        // SAFETY: prctl with an integer argument changes only this process's dumpable flag.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
    }
    let cli = cli::parse();
    // Die quietly on a closed pipe (`strata inspect x | head`), as other command-line tools do,
    // instead of panicking in println!. Not for the commands that talk to a registry: a peer
    // closing a TLS connection must be an error, not a silent death by SIGPIPE.
    if !cli.command.uses_network() {
        // SAFETY: called before any thread exists; SIG_DFL is a valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The exit code is the error's class (engine::error::Class): 1 a failed build,
            // 2 wrong input, 3 a registry, 4 this machine's sandbox, 128+N a signal.
            let (shown, code) = cli::render::error(&e);
            eprint!("{shown}");
            code
        }
    };
    std::process::exit(code);
}
