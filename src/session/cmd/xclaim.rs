//! `XCLAIM <topic> <group> <consumer> <min-idle-ms> <id> [id ...] [IDLE ms]
//! [TIME unix-ms] [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id]`: pending
//! entries idle that long become `consumer`'s. An entry that would pass
//! `queue.max_deliveries` goes to the dead-letter topic instead and is left
//! out, as Redis leaves out deleted entries. `FORCE` cannot make an entry
//! pending that is not (databus holds only what it handed out); `LASTID`
//! is accepted and has nothing to set.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::queue::ClaimOptions;
use crate::resp::Frame;
use crate::session::queue::{self, consumer_name, entries_frame, ids_frame, parse_count, parse_id, parse_ms};
use crate::session::{CommandError, Reply, Session};

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    apply(session, args).into()
}

fn apply(session: &mut Session, args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    let [_, key, group, consumer, min_idle, rest @ ..] = args else {
        return Err(CommandError::WrongArgs("xclaim"));
    };
    let min_idle = Duration::from_millis(parse_ms(min_idle)?);
    let now = Instant::now();
    // The IDs, then the options.
    let ids_end = rest.iter().position(|a| parse_id(a).is_err()).unwrap_or(rest.len());
    let ids = rest[..ids_end].iter().map(|a| parse_id(a)).collect::<Result<Vec<_>, _>>()?;
    let mut options = ClaimOptions::default();
    let mut at = ids_end;
    while let Some(arg) = rest.get(at) {
        let value = rest.get(at + 1);
        match (arg.to_ascii_lowercase().as_slice(), value) {
            (b"idle", Some(ms)) => {
                options.delivered =
                    Some(now.checked_sub(Duration::from_millis(parse_ms(ms)?)).unwrap_or(now));
                at += 2;
            }
            (b"time", Some(ms)) => {
                let unix_now =
                    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
                let idle = unix_now.saturating_sub(parse_ms(ms)?);
                options.delivered = Some(now.checked_sub(Duration::from_millis(idle)).unwrap_or(now));
                at += 2;
            }
            (b"retrycount", Some(n)) => {
                options.deliveries = Some(parse_count(n)? as u64);
                at += 2;
            }
            (b"lastid", Some(id)) => {
                parse_id(id)?;
                at += 2;
            }
            (b"force", _) => at += 1,
            (b"justid", _) => {
                options.just_id = true;
                at += 1;
            }
            _ if ids.is_empty() => return Err(CommandError::BadStreamId),
            _ => return Err(CommandError::Syntax),
        }
    }
    if ids.is_empty() {
        return Err(CommandError::WrongArgs("xclaim"));
    }
    let consumer = consumer_name(consumer);
    let reader = queue::reader(session)?;
    reader.check(key, group, None)?;
    let group = reader.attached.group.clone();
    let handed = group.shared.book().claim(&consumer, min_idle, &ids, options, now);
    let reply = match options.just_id {
        true => ids_frame(handed.entries.iter().map(|e| e.id)),
        false => entries_frame(&handed.entries),
    };
    if !handed.dead.is_empty() {
        group.dead_letter(handed.dead);
    }
    Ok(reply)
}
