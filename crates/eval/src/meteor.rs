//! METEOR 1.5 through the official jar, driven the way pycocoevalcap (and so e2e-metrics) does:
//! `java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`, one `SCORE ||| refs ||| hyp` line
//! per segment, then one `EVAL ||| stats ...` line whose last output line is the corpus score.

use crate::error::EvalError;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable naming the jar when no path is passed.
pub const METEOR_JAR_ENV: &str = "METEOR_JAR";

/// The jar to use: the argument, else `$METEOR_JAR`; `None` means METEOR is skipped.
pub fn find_jar(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(|| std::env::var_os(METEOR_JAR_ENV).map(PathBuf::from))
}

/// Corpus METEOR of `hypotheses` against `references` (`-l en -norm`, stdio mode as in
/// pycocoevalcap; the WebNLG/DART scripts run the same options in file mode with `-r N`).
pub fn meteor(jar: &Path, hypotheses: &[String], references: &[Vec<String>]) -> Result<f64, EvalError> {
    let err = |message: String| EvalError::Meteor { jar: jar.to_path_buf(), message };
    if !jar.is_file() {
        return Err(err("jar not found".into()));
    }
    let dir = jar.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut child = Command::new("java")
        .args(["-jar", "-Xmx2G"])
        .arg(jar.file_name().unwrap_or_default())
        .args(["-", "-", "-stdio", "-l", "en", "-norm"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot start java: {e}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| err("no stdin".into()))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| err("no stdout".into()))?);
    let mut read_line = |what: &str| -> Result<String, EvalError> {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).map_err(|e| err(format!("reading {what}: {e}")))?;
        if n == 0 {
            return Err(err(format!("java exited before printing {what}")));
        }
        Ok(line.trim().to_string())
    };
    let mut eval_line = String::from("EVAL");
    for (hyp, refs) in hypotheses.iter().zip(references) {
        let hyp = hyp.replace("|||", "").replace("  ", " ");
        let line = format!("SCORE ||| {} ||| {}\n", refs.join(" ||| "), hyp);
        stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()).map_err(|e| err(e.to_string()))?;
        let stats = read_line("segment statistics")?;
        eval_line.push_str(" ||| ");
        eval_line.push_str(&stats);
    }
    eval_line.push('\n');
    stdin.write_all(eval_line.as_bytes()).and_then(|_| stdin.flush()).map_err(|e| err(e.to_string()))?;
    for _ in 0..hypotheses.len() {
        read_line("segment score")?;
    }
    let score = read_line("corpus score")?;
    drop(stdin);
    let _ = child.wait();
    score.parse::<f64>().map_err(|_| err(format!("unexpected output {score:?}")))
}
