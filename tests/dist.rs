//! The Debian package of `make dist` (scripts/dist.sh), installed for real
//! with dpkg as an operator would: the binary answers `--version`, the
//! `databus` system user it creates can read the config and `databus check`
//! passes with it, the systemd unit passes `systemd-analyze verify` without
//! a warning, and a purge takes everything away again. The package holds the
//! test build of the binary (`DATABUS_BIN`), not a second release build.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::daemon::{broker_list, daemon_config, databus_bin};
use testkit::database::TestDb;
use testkit::services::{free_port, unique, TempDir};
use testkit::topics::create_topic;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "databus"]);
    }
}

#[test]
fn the_debian_package_installs_checks_verifies_and_purges() {
    let uid = run("id", &["-u"]);
    assert_eq!(text(&uid).trim(), "0", "dpkg -i needs root; run the tests as root (CI does)");
    // The test installs and purges the package: never over one an operator installed.
    let already = run("dpkg", &["-s", "databus"]);
    assert!(
        !already.status.success(),
        "a databus package is installed on this machine; the test will not replace it"
    );
    let out_dir = TempDir::new("dist");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/dist.sh");
    let built = Command::new(&script)
        .env("DATABUS_BIN", databus_bin())
        .env("DIST_DIR", &out_dir.0)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(built.status.success(), "dist.sh failed:\n{}", text(&built));
    let deb = String::from_utf8(built.stdout.clone()).unwrap().trim().to_owned();
    assert!(Path::new(&deb).is_file(), "dist.sh printed {deb:?}");

    let listing = text(&run("dpkg-deb", &["--contents", &deb]));
    for path in [
        "./usr/bin/databus",
        "./etc/databus/databus.toml",
        "./lib/systemd/system/databus.service",
        "./usr/share/doc/databus/README.md",
        "./usr/share/doc/databus/ARCHITECTURE.md",
        "./usr/share/doc/databus/docs/protocol.md",
        "./usr/share/doc/databus/docs/configuration.md",
        "./usr/share/databus/prometheus/databus-rules.yml",
        "./usr/share/databus/grafana/databus-dashboard.json",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} not in the package:\n{listing}");
    }
    let field = |name: &str| text(&run("dpkg-deb", &["--field", &deb, name])).trim().to_owned();
    assert_eq!(field("Package"), "databus");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));

    let installed = run("dpkg", &["-i", &deb]);
    let _purge = Installed;
    assert!(installed.status.success(), "dpkg -i failed:\n{}", text(&installed));
    let version = run("/usr/bin/databus", &["--version"]);
    assert_eq!(text(&version), format!("databus {}\n", env!("CARGO_PKG_VERSION")));
    assert!(run("id", &["databus"]).status.success(), "no databus user after install");

    // The shipped config's store and cluster are this machine's only by
    // chance; the operator writes theirs, then checks it as the service's user.
    let db = TestDb::new("dist");
    let topic = unique("t_dist");
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_grant(1, "g1", 3, &topic);
    create_topic(&topic, 1);
    let config = daemon_config(free_port(), &db.url(), &broker_list(), "");
    std::fs::write("/etc/databus/databus.toml", config).unwrap();
    let check =
        run("runuser", &["-u", "databus", "--", "databus", "check", "-c", "/etc/databus/databus.toml"]);
    assert!(check.status.success(), "databus check as user databus failed:\n{}", text(&check));
    assert!(text(&check).ends_with("databus check: ok\n"), "{}", text(&check));
    // Others may not read it: it holds the store's and Kafka's passwords.
    let others = run("runuser", &["-u", "nobody", "--", "cat", "/etc/databus/databus.toml"]);
    assert!(!others.status.success(), "user nobody can read the config");

    let verify = run("systemd-analyze", &["verify", "/lib/systemd/system/databus.service"]);
    assert!(verify.status.success(), "systemd-analyze verify failed:\n{}", text(&verify));
    assert_eq!(text(&verify), "", "systemd-analyze verify warned");

    let purged = run("dpkg", &["--purge", "databus"]);
    assert!(purged.status.success(), "dpkg --purge failed:\n{}", text(&purged));
    assert!(!Path::new("/usr/bin/databus").exists());
    assert!(!Path::new("/etc/databus").exists(), "/etc/databus left after purge");
    assert!(!run("id", &["databus"]).status.success(), "the databus user is left after purge");
}
