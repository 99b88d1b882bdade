//! `strata parse [--dump] FILE`

use super::render::INPUT;
use std::path::PathBuf;

use strata::dockerfile;
use strata::plan;

use super::render;

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Print the syntax tree in the s-expression form of BuildKit's parser tests (syntax only:
    /// instructions are not checked).
    #[arg(long)]
    dump: bool,
    /// The Dockerfile (`-` for standard input).
    file: PathBuf,
}

pub fn run(a: ParseArgs) -> anyhow::Result<i32> {
    let src = super::read_dockerfile(&a.file)?;
    if a.dump {
        return Ok(match dockerfile::parse(&src) {
            Ok(df) => {
                println!("{}", dockerfile::dump(&df));
                0
            }
            Err(e) => {
                eprint!("{}", render::diagnostic(&e));
                INPUT
            }
        });
    }
    let result = dockerfile::load(&src).and_then(|(df, cmds)| {
        let n = cmds.len();
        plan::plan(&df, cmds, plan::Options::default()).map(|p| (p, n))
    });
    match result {
        Ok((p, n)) => {
            println!(
                "{}: {} instructions, {} stages",
                src.name(),
                n,
                p.stages.len()
            );
            for s in &p.stages {
                let base = match &s.base {
                    plan::Base::Scratch => "scratch".to_string(),
                    plan::Base::Stage(i) => format!("stage {}", p.stages[*i].display_name()),
                    plan::Base::Image(r) => r.clone(),
                    plan::Base::Context(c) => format!("context {c}"),
                };
                let mark = if s.index == p.target { " (target)" } else { "" };
                println!(
                    "  [{}] {} from {} ({} instructions){}",
                    s.index,
                    s.display_name(),
                    base,
                    s.commands.len(),
                    mark
                );
            }
            Ok(0)
        }
        Err(e) => {
            eprint!("{}", render::diagnostic(&e));
            Ok(INPUT)
        }
    }
}
