//! Numeric options of the kubelet benches (`stats-bench`, `probe-bench`; each includes this
//! file): `--name N`, the default when the option is absent.

/// The value of the option `name` (`--pods`) in this process's arguments, `default` when it
/// is absent. A value that is missing or not a non-negative integer is no silent default: the
/// bench stops with a message naming the option (exit code 2, a usage error).
pub fn number(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    match parse(&args, name, default) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

/// [`number`] over `args`.
fn parse(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    let Some(i) = args.iter().position(|a| a == name) else {
        return Ok(default);
    };
    let value = args.get(i + 1).map(String::as_str).unwrap_or("");
    value
        .parse()
        .map_err(|_| format!("{name} takes a non-negative integer, not {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn an_option_is_its_number_or_its_default_and_a_bad_value_is_an_error() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&args(&["b", "--pods", "7"]), "--pods", 30), Ok(7));
        assert_eq!(parse(&args(&["b"]), "--pods", 30), Ok(30));
        assert_eq!(
            parse(&args(&["b", "--pods", "x"]), "--pods", 30),
            Err("--pods takes a non-negative integer, not \"x\"".into())
        );
        assert!(parse(&args(&["b", "--pods"]), "--pods", 30).is_err());
    }
}
