//! `berth serve`'s Kafka connection settings: `--kafka-tls`, `--kafka-ca-file` and `--kafka-sasl-*` (each
//! with a `BERTH_KAFKA_*` variable), or the configuration file's `kafka_tls`, `kafka_ca_file`,
//! `kafka_sasl_mechanism` and `kafka_sasl_username`. The password comes from the flag or the environment
//! only, like every secret.

use berth_delivery::kafka::{KafkaSasl, KafkaSecurity, SaslMechanism};

#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Kafka connection (TLS and SASL)")]
pub struct KafkaArgs {
    /// Reach the Kafka brokers over TLS, trusting the system's certificate authorities
    #[arg(long, env = "BERTH_KAFKA_TLS")]
    pub kafka_tls: bool,
    /// Reach the Kafka brokers over TLS, trusting the certificate authorities of this PEM file instead
    #[arg(long, env = "BERTH_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<String>,
    /// Authenticate to the brokers with SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    #[arg(long, env = "BERTH_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// The SASL username
    #[arg(long, env = "BERTH_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// The SASL password
    #[arg(long, env = "BERTH_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
}

/// The configuration file's Kafka keys (no password: a file is not a place for secrets).
#[derive(Debug, Default)]
pub struct KafkaFile {
    pub tls: Option<bool>,
    pub ca_file: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
}

/// Flags beat the file. SASL needs its mechanism, username and password together; PLAIN without TLS is
/// refused (the password would cross the network in clear).
pub fn resolve(args: KafkaArgs, file: KafkaFile) -> anyhow::Result<KafkaSecurity> {
    let nonempty = |s: &String| !s.trim().is_empty();
    let tls = args.kafka_tls || file.tls.unwrap_or(false);
    let ca_file = args.kafka_ca_file.or(file.ca_file).filter(nonempty);
    let mechanism = args.kafka_sasl_mechanism.or(file.sasl_mechanism).filter(nonempty);
    let username = args.kafka_sasl_username.or(file.sasl_username).filter(nonempty);
    let password = args.kafka_sasl_password.filter(|p| !p.is_empty());
    let sasl = match (mechanism, username, password) {
        (None, None, None) => None,
        (Some(m), Some(username), Some(password)) => {
            let mechanism: SaslMechanism =
                m.parse().map_err(|e: String| anyhow::anyhow!("--kafka-sasl-mechanism: {e}"))?;
            Some(KafkaSasl { mechanism, username, password })
        }
        _ => anyhow::bail!(
            "Kafka SASL needs --kafka-sasl-mechanism, --kafka-sasl-username and --kafka-sasl-password \
             (BERTH_KAFKA_SASL_PASSWORD) together"
        ),
    };
    let over_tls = tls || ca_file.is_some();
    if sasl.as_ref().is_some_and(|s| s.mechanism == SaslMechanism::Plain) && !over_tls {
        anyhow::bail!("Kafka SASL PLAIN sends the password in clear: add --kafka-tls or --kafka-ca-file");
    }
    KafkaSecurity::new(tls, ca_file.as_deref(), sasl).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mechanism: Option<&str>, username: Option<&str>, password: Option<&str>, tls: bool) -> KafkaArgs {
        KafkaArgs {
            kafka_tls: tls,
            kafka_ca_file: None,
            kafka_sasl_mechanism: mechanism.map(str::to_string),
            kafka_sasl_username: username.map(str::to_string),
            kafka_sasl_password: password.map(str::to_string),
        }
    }

    #[test]
    fn sasl_needs_all_three_settings_and_plain_needs_tls() {
        let plain = resolve(KafkaArgs::default(), KafkaFile::default()).expect("no settings");
        assert!(!plain.tls() && plain.sasl_mechanism().is_none());
        let scram = resolve(args(Some("scram-sha-512"), Some("berth"), Some("s3cret"), false), KafkaFile::default())
            .expect("SCRAM over TCP");
        assert_eq!(scram.sasl_mechanism(), Some(SaslMechanism::ScramSha512));
        let shown = format!("{scram:?}");
        assert!(!shown.contains("s3cret") && shown.contains("berth"), "the password never shows: {shown}");
        for (m, u, p) in
            [(Some("PLAIN"), Some("u"), None), (None, Some("u"), Some("p")), (Some("PLAIN"), None, Some("p"))]
        {
            let e = resolve(args(m, u, p, true), KafkaFile::default()).expect_err("incomplete");
            assert!(e.to_string().contains("together"), "{e}");
        }
        let e = resolve(args(Some("PLAIN"), Some("u"), Some("p"), false), KafkaFile::default()).expect_err("in clear");
        assert!(e.to_string().contains("--kafka-tls"), "{e}");
        let ok = resolve(args(Some("PLAIN"), Some("u"), Some("p"), true), KafkaFile::default()).expect("over TLS");
        assert!(ok.tls());
        let e = resolve(args(Some("GSSAPI"), Some("u"), Some("p"), true), KafkaFile::default()).expect_err("unknown");
        assert!(e.to_string().contains("SCRAM-SHA-512"), "{e}");
    }

    #[test]
    fn a_ca_file_means_tls_and_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let file = KafkaFile { ca_file: Some(empty.display().to_string()), ..Default::default() };
        let e = resolve(KafkaArgs::default(), file).expect_err("no certificate");
        assert!(e.to_string().contains("no certificate"), "{e}");
        let missing = KafkaFile { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(resolve(KafkaArgs::default(), missing).is_err());
        let from_file = KafkaFile { tls: Some(true), ..Default::default() };
        assert!(resolve(KafkaArgs::default(), from_file).expect("tls from the file").tls());
    }
}
