//! `stripe-worker routes` and `stripe-worker pattern`: inspect the routing definition and
//! test event patterns offline, like `aws events test-event-pattern`.
//!
//! Output goes to the writer passed in (so tests capture it); problems with the user's
//! files go to stderr and exit with [`EXIT_BAD_INPUT`]; only a failure to write the output
//! is returned as an error. `pattern test` exits like `grep`: 0 on a match, 1 on none.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde::ser::Serializer;
use serde_json::Value;

use crate::domain::Domain;
use crate::pattern::{EventPattern, PatternError};
use crate::routing::{Router, domain_for_event_type, domain_pattern, routing_table};

/// Exit code for unreadable files, invalid JSON, an invalid pattern or an event of unknown
/// shape (the usage-error code, as the AWS CLI uses for a rejected pattern).
pub const EXIT_BAD_INPUT: u8 = super::exit::USAGE;

/// `stripe-worker routes [--format table|json] [test --event FILE]`
#[derive(Debug, Clone, Args)]
pub struct RoutesArgs {
    /// Without a subcommand: print the routing table.
    #[command(subcommand)]
    pub command: Option<RoutesCommand>,
    /// How to print the routing table: rows, or the EventBridge pattern of each domain.
    #[arg(long, value_enum, default_value_t = RoutesFormat::Table)]
    pub format: RoutesFormat,
    /// Print the EventBridge patterns as JSON (the same as `--format json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

/// Subcommands of `routes`.
#[derive(Debug, Clone, Subcommand)]
pub enum RoutesCommand {
    /// Print the domains an event lands in (an EventBridge envelope or a bare Stripe event).
    Test(RoutesTestArgs),
}

/// `routes test --event FILE`
#[derive(Debug, Clone, Args)]
pub struct RoutesTestArgs {
    /// JSON file holding an EventBridge envelope or a bare Stripe event.
    #[arg(long, value_name = "FILE")]
    pub event: PathBuf,
    /// Print `{"domains": [...]}` instead of one domain per line (also with
    /// `routes --json test` or `routes --format json test`).
    #[arg(long)]
    pub json: bool,
}

/// Output format of `routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RoutesFormat {
    /// One row per route: domain, match kind, event type.
    #[default]
    Table,
    /// `{"subscription": <pattern>, "payment": ..., "customer": ...}`, the rules as installed.
    Json,
}

/// `stripe-worker pattern test --pattern FILE --event FILE`
#[derive(Debug, Clone, Args)]
pub struct PatternArgs {
    /// What to do with a pattern.
    #[command(subcommand)]
    pub command: PatternCommand,
}

/// Subcommands of `pattern`.
#[derive(Debug, Clone, Subcommand)]
pub enum PatternCommand {
    /// Print `true` or `false`: whether the event matches the pattern.
    Test(PatternTestArgs),
}

/// `pattern test --pattern FILE --event FILE`
#[derive(Debug, Clone, Args)]
pub struct PatternTestArgs {
    /// JSON file holding an EventBridge event pattern.
    #[arg(long, value_name = "FILE")]
    pub pattern: PathBuf,
    /// JSON file holding the event to test.
    #[arg(long, value_name = "FILE")]
    pub event: PathBuf,
    /// Print `{"matched": true|false}` instead of `true` or `false`.
    #[arg(long)]
    pub json: bool,
}

/// A problem with the files given on the command line. Permanent: retrying will not help.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{} is not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Where the JSON breaks.
        source: serde_json::Error,
    },
    /// The file is JSON but not a valid event pattern.
    #[error("{}: {source}", path.display())]
    Pattern {
        /// The file.
        path: PathBuf,
        /// What is wrong with the pattern, and where.
        source: PatternError,
    },
    /// The event is neither an EventBridge envelope nor a Stripe event.
    #[error(
        "{}: not an EventBridge envelope (source, detail-type, detail) nor a Stripe event (type)",
        path.display()
    )]
    UnknownEventShape {
        /// The file.
        path: PathBuf,
    },
}

/// Run `routes`: print the table, the patterns, or where one event lands.
pub fn run_routes(args: RoutesArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let format = if args.json {
        RoutesFormat::Json
    } else {
        args.format
    };
    match args.command {
        None => {
            match format {
                RoutesFormat::Table => write_table(out)?,
                RoutesFormat::Json => {
                    serde_json::to_writer_pretty(&mut *out, &DomainPatterns)?;
                    writeln!(out)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(RoutesCommand::Test(test)) => match routes_for_event_file(&test.event) {
            Ok(domains) if test.json || format == RoutesFormat::Json => {
                writeln!(out, "{}", serde_json::json!({ "domains": domains }))?;
                Ok(ExitCode::SUCCESS)
            }
            Ok(domains) if domains.is_empty() => {
                writeln!(out, "none")?;
                Ok(ExitCode::SUCCESS)
            }
            Ok(domains) => {
                for domain in domains {
                    writeln!(out, "{domain}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => Ok(bad_input(&err)),
        },
    }
}

/// Exit code of `pattern test` when the event does not match (as `grep` finding nothing).
pub const EXIT_NO_MATCH: u8 = 1;

/// Run `pattern`: print whether the event matches the pattern; exit 0 on a match and
/// [`EXIT_NO_MATCH`] on none, so scripts can test it like `grep`.
pub fn run_pattern(args: PatternArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let PatternCommand::Test(test) = args.command;
    match test_pattern_files(&test.pattern, &test.event) {
        Ok(matched) => {
            if test.json {
                writeln!(out, "{}", serde_json::json!({ "matched": matched }))?;
            } else {
                writeln!(out, "{matched}")?;
            }
            Ok(if matched {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NO_MATCH)
            })
        }
        Err(err) => Ok(bad_input(&err)),
    }
}

/// The domains the event in `path` lands in: an envelope through the standard [`Router`]
/// (exactly what the bus rules do), a bare Stripe event by its type.
pub fn routes_for_event_file(path: &Path) -> Result<Vec<Domain>, InputError> {
    let event = read_json(path)?;
    let is_envelope = ["source", "detail-type", "detail"]
        .iter()
        .all(|key| event.get(key).is_some());
    if is_envelope {
        return Ok(Router::standard().route(&event));
    }
    match event.get("type").and_then(Value::as_str) {
        Some(event_type) => Ok(domain_for_event_type(event_type).into_iter().collect()),
        None => Err(InputError::UnknownEventShape {
            path: path.to_owned(),
        }),
    }
}

/// Whether the event in `event_path` matches the pattern in `pattern_path`.
pub fn test_pattern_files(pattern_path: &Path, event_path: &Path) -> Result<bool, InputError> {
    let pattern_json = read_json(pattern_path)?;
    let pattern = EventPattern::parse(&pattern_json).map_err(|source| InputError::Pattern {
        path: pattern_path.to_owned(),
        source,
    })?;
    let event = read_json(event_path)?;
    Ok(pattern.matches(&event))
}

fn read_json(path: &Path) -> Result<Value, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| InputError::Json {
        path: path.to_owned(),
        source,
    })
}

fn bad_input(err: &InputError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_BAD_INPUT)
}

fn write_table(out: &mut impl Write) -> std::io::Result<()> {
    let rows = routing_table();
    let width = rows
        .iter()
        .map(|r| r.domain.as_str().len())
        .chain(["DOMAIN".len()])
        .max()
        .unwrap_or(0);
    writeln!(out, "{:<width$}  {:<6}  EVENT TYPE", "DOMAIN", "MATCH")?;
    for row in rows {
        writeln!(
            out,
            "{:<width$}  {:<6}  {}",
            row.domain.as_str(),
            row.kind.as_str(),
            row.value
        )?;
    }
    writeln!(
        out,
        "Each row also matches the thin-event name v1.<type>, from both source stripe.webhook \
         (detail.type) and aws.partner/stripe.com/* (detail-type)."
    )
}

/// `{"subscription": <pattern>, ...}` in [`Domain::ALL`] order (a `serde_json::Map` would
/// sort the keys).
struct DomainPatterns;

impl Serialize for DomainPatterns {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(Domain::ALL.iter().map(|d| (d.as_str(), domain_pattern(*d))))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use clap::Parser;
    use serde_json::json;
    use tempfile::NamedTempFile;

    use super::*;

    /// A stand-in for the binary's command line, to check the argument shapes parse.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Routes(RoutesArgs),
        Pattern(PatternArgs),
    }

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn json_file(value: &Value) -> NamedTempFile {
        let mut file = NamedTempFile::new().expect("temp file");
        write!(file, "{value}").expect("write temp file");
        file
    }

    fn text_file(text: &str) -> NamedTempFile {
        let mut file = NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write temp file");
        file
    }

    fn routes(args: &[&str]) -> (ExitCode, String) {
        let cli =
            Cli::try_parse_from(["stripe-worker", "routes"].iter().chain(args)).expect("parse");
        let Top::Routes(args) = cli.command else {
            panic!("not routes")
        };
        let mut out = Vec::new();
        let code = run_routes(args, &mut out).expect("run");
        (code, String::from_utf8(out).expect("utf8"))
    }

    fn pattern_test(pattern: &Path, event: &Path) -> (ExitCode, String) {
        let argv = [
            "stripe-worker",
            "pattern",
            "test",
            "--pattern",
            pattern.to_str().expect("path"),
            "--event",
            event.to_str().expect("path"),
        ];
        let cli = Cli::try_parse_from(argv).expect("parse");
        let Top::Pattern(args) = cli.command else {
            panic!("not pattern")
        };
        let mut out = Vec::new();
        let code = run_pattern(args, &mut out).expect("run");
        (code, String::from_utf8(out).expect("utf8"))
    }

    #[test]
    fn table_lists_every_route() {
        let (code, out) = routes(&[]);
        assert_eq!(code, ExitCode::SUCCESS);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("DOMAIN"));
        assert!(lines.contains(&"subscription  prefix  customer.subscription."));
        assert!(lines.contains(&"customer      exact   customer.created"));
        assert!(lines.contains(&"payment       prefix  charge."));
        assert_eq!(lines.len(), routing_table().len() + 2);
        let (_, explicit) = routes(&["--format", "table"]);
        assert_eq!(explicit, out);
        assert_eq!(routes(&["--json"]), routes(&["--format", "json"]));
    }

    #[test]
    fn json_prints_the_installed_patterns_in_domain_order() {
        let (code, out) = routes(&["--format", "json"]);
        assert_eq!(code, ExitCode::SUCCESS);
        let parsed: Value = serde_json::from_str(&out).expect("valid JSON");
        for domain in Domain::ALL {
            assert_eq!(parsed[domain.as_str()], domain_pattern(domain), "{domain}");
        }
        let sub = out.find("\"subscription\"").expect("subscription key");
        let pay = out.find("\"payment\"").expect("payment key");
        let cus = out.find("\n  \"customer\"").expect("customer key");
        assert!(sub < pay && pay < cus);
    }

    #[test]
    fn routes_test_prints_domains_or_none() {
        for (file, want) in [
            (
                "patterns/envelope_webhook_subscription.json",
                "subscription\n",
            ),
            (
                "patterns/envelope_partner_snapshot_invoice.json",
                "payment\n",
            ),
            (
                "patterns/envelope_partner_thin_subscription.json",
                "subscription\n",
            ),
            ("patterns/envelope_webhook_thin_customer.json", "customer\n"),
            ("patterns/envelope_partner_unrouted_plan.json", "none\n"),
            ("patterns/bare_event_setup_intent.json", "customer\n"),
            ("stripe/eventbridge_snapshot_envelope.json", "customer\n"),
            ("stripe/eventbridge_thin_envelope.json", "none\n"),
            ("stripe/event.json", "none\n"),
        ] {
            let path = fixture(file);
            let (code, out) = routes(&["test", "--event", path.to_str().expect("path")]);
            assert_eq!(code, ExitCode::SUCCESS, "{file}");
            assert_eq!(out, want, "{file}");
        }
    }

    #[test]
    fn routes_test_rejects_bad_files() {
        let missing = fixture("patterns/does_not_exist.json");
        let err = routes_for_event_file(&missing).expect_err("missing file");
        assert!(matches!(err, InputError::Read { .. }));
        assert!(err.to_string().contains("does_not_exist.json"));

        let (code, out) = routes(&["test", "--event", missing.to_str().expect("path")]);
        assert_eq!(code, ExitCode::from(EXIT_BAD_INPUT));
        assert!(out.is_empty());

        let shapeless = json_file(&json!({"hello": "world"}));
        let err = routes_for_event_file(shapeless.path()).expect_err("no type");
        assert!(matches!(err, InputError::UnknownEventShape { .. }));
    }

    #[test]
    fn pattern_test_prints_true_or_false() {
        let event = fixture("stripe/eventbridge_snapshot_envelope.json");
        let yes = json_file(
            &json!({"detail-type": [{"prefix": "customer."}], "detail": {"livemode": [true]}}),
        );
        let no = json_file(&json!({"detail-type": [{"anything-but": {"prefix": "customer."}}]}));
        assert_eq!(
            pattern_test(yes.path(), &event),
            (ExitCode::SUCCESS, "true\n".to_owned())
        );
        assert_eq!(
            pattern_test(no.path(), &event),
            (ExitCode::from(EXIT_NO_MATCH), "false\n".to_owned())
        );
        // The installed customer rule matches the partner fixture.
        let customer = json_file(&domain_pattern(Domain::Customer));
        assert_eq!(pattern_test(customer.path(), &event).1, "true\n");
    }

    #[test]
    fn invalid_pattern_exits_2_naming_the_problem() {
        let event = fixture("stripe/eventbridge_snapshot_envelope.json");
        let bad = json_file(&json!({"detail": {"type": [{"numeric": [">", 5, "<", 1]}]}}));
        let (code, out) = pattern_test(bad.path(), &event);
        assert_eq!(code, ExitCode::from(EXIT_BAD_INPUT));
        assert!(out.is_empty());
        let err = test_pattern_files(bad.path(), &event).expect_err("invalid");
        let shown = err.to_string();
        assert!(shown.contains("detail.type[0]"), "{shown}");
        assert!(
            shown.contains("lower bound 5 must be less than the upper bound 1"),
            "{shown}"
        );
        assert!(matches!(err, InputError::Pattern { .. }));
    }

    #[test]
    fn unreadable_or_non_json_files_exit_2() {
        let event = fixture("stripe/eventbridge_snapshot_envelope.json");
        let not_json = text_file("{\"source\": [");
        let (code, out) = pattern_test(not_json.path(), &event);
        assert_eq!(code, ExitCode::from(EXIT_BAD_INPUT));
        assert!(out.is_empty());
        let err = test_pattern_files(not_json.path(), &event).expect_err("not JSON");
        assert!(matches!(err, InputError::Json { .. }), "{err}");
        assert!(err.to_string().contains("is not valid JSON"));

        let pattern = json_file(&json!({"source": ["x"]}));
        let missing = fixture("patterns/nope.json");
        let (code, _) = pattern_test(pattern.path(), &missing);
        assert_eq!(code, ExitCode::from(EXIT_BAD_INPUT));
        let err = test_pattern_files(pattern.path(), &missing).expect_err("missing event");
        assert!(matches!(err, InputError::Read { .. }));
    }

    #[test]
    fn arguments_are_required_and_formats_checked() {
        assert!(
            Cli::try_parse_from(["stripe-worker", "pattern", "test", "--pattern", "p.json"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["stripe-worker", "routes", "--format", "yaml"]).is_err());
        assert!(Cli::try_parse_from(["stripe-worker", "routes", "test"]).is_err());
    }
}
