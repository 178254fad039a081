//! The `fake` driver: an in-memory BMC for demos, tests and benchmarks.
//!
//! It keeps a power state and a boot device, and can be told through
//! `driver_info` to be slow (`latency_ms`), to fail a fraction of its calls
//! (`failure_rate`), or to panic in a call (`panic_on`), so that the actors'
//! handling of slow, failing and crashing drivers can be exercised without
//! hardware.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::{Bmc, BmcFuture, Boot, DriverError, Facts, Inspection, Power, PowerAction};

/// An in-memory BMC.
///
/// The simulated hardware's state sits in atomics: it is the BMC's state, not
/// the node's, and the driver actor never runs two calls at once anyway.
#[derive(Debug)]
pub struct FakeBmc {
    latency: Duration,
    failure_rate: f64,
    panic_on: Option<String>,
    power: AtomicU8,
    boot: AtomicU8,
}

const OFF: u8 = 0;
const ON: u8 = 1;
const NO_BOOT: u8 = 0;

fn boot_code(b: Boot) -> u8 {
    match b {
        Boot::Pxe => 1,
        Boot::Disk => 2,
        Boot::Cdrom => 3,
        Boot::Bios => 4,
    }
}

fn boot_of(code: u8) -> Option<Boot> {
    match code {
        1 => Some(Boot::Pxe),
        2 => Some(Boot::Disk),
        3 => Some(Boot::Cdrom),
        4 => Some(Boot::Bios),
        _ => None,
    }
}

impl FakeBmc {
    /// A fake BMC with the given behaviour, powered off.
    pub fn new(latency: Duration, failure_rate: f64) -> Self {
        FakeBmc { latency, failure_rate, panic_on: None, power: AtomicU8::new(OFF), boot: AtomicU8::new(NO_BOOT) }
    }

    /// Builds one from validated `driver_info` (`latency_ms`, `failure_rate`,
    /// `panic_on`, `power`).
    pub fn from_info(info: &BTreeMap<String, String>) -> Result<Self, DriverError> {
        let latency_ms: u64 = info.get("latency_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        let failure_rate: f64 = info.get("failure_rate").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let mut bmc = FakeBmc::new(Duration::from_millis(latency_ms), failure_rate);
        bmc.panic_on = info.get("panic_on").cloned();
        if info.get("power").map(String::as_str) == Some("on") {
            bmc.power.store(ON, Ordering::Relaxed);
        }
        Ok(bmc)
    }

    /// Waits the configured latency, then fails or panics if told to.
    async fn call(&self, name: &str) -> Result<(), DriverError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if let Some(p) = &self.panic_on
            && (p == name || p == "any")
        {
            panic!("fake BMC told to panic in '{name}'");
        }
        if self.failure_rate > 0.0 && rand::random::<f64>() < self.failure_rate {
            return Err(DriverError::Injected(format!("{name} failed, failure_rate {}", self.failure_rate)));
        }
        Ok(())
    }
}

impl Bmc for FakeBmc {
    fn kind(&self) -> crate::Kind {
        crate::Kind::Fake
    }

    fn get_power_state(&self) -> BmcFuture<'_, Power> {
        Box::pin(async move {
            self.call("power").await?;
            Ok(if self.power.load(Ordering::Relaxed) == ON { Power::On } else { Power::Off })
        })
    }

    fn set_power_state(&self, action: PowerAction) -> BmcFuture<'_, ()> {
        Box::pin(async move {
            self.call("set_power").await?;
            let code = if action.target() == Power::On { ON } else { OFF };
            self.power.store(code, Ordering::Relaxed);
            Ok(())
        })
    }

    fn set_boot_device(&self, device: Boot, _persistent: bool) -> BmcFuture<'_, ()> {
        Box::pin(async move {
            self.call("boot").await?;
            self.boot.store(boot_code(device), Ordering::Relaxed);
            Ok(())
        })
    }

    fn get_boot_device(&self) -> BmcFuture<'_, Option<Boot>> {
        Box::pin(async move {
            self.call("boot").await?;
            Ok(boot_of(self.boot.load(Ordering::Relaxed)))
        })
    }

    /// Made-up facts and no NICs: a fake node's ports are the operator's
    /// (`kiln port create`), and a demo site's ports stay as they were made.
    fn inspect(&self) -> BmcFuture<'_, Inspection> {
        Box::pin(async move {
            self.call("inspect").await?;
            let mut facts = Facts::new();
            facts.insert("cpus".into(), "8".into());
            facts.insert("memory_mb".into(), "16384".into());
            facts.insert("cpu_arch".into(), "x86_64".into());
            Ok(Inspection { facts, nics: Vec::new() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_power_and_boot_device() {
        let bmc = FakeBmc::new(Duration::ZERO, 0.0);
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
        bmc.set_power_state(PowerAction::Reboot).await.unwrap();
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
        bmc.set_power_state(PowerAction::SoftOff).await.unwrap();
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
        assert_eq!(bmc.get_boot_device().await.unwrap(), None);
        bmc.set_boot_device(Boot::Pxe, true).await.unwrap();
        assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Pxe));
    }

    #[tokio::test]
    async fn a_failure_rate_of_one_always_fails() {
        let bmc = FakeBmc::new(Duration::ZERO, 1.0);
        let err = bmc.get_power_state().await.unwrap_err();
        assert!(matches!(err, DriverError::Injected(_)), "{err}");
    }

    #[tokio::test]
    async fn panic_on_panics_in_the_named_call_only() {
        let info: BTreeMap<String, String> = [("panic_on".to_string(), "set_power".to_string())].into();
        let bmc = std::sync::Arc::new(FakeBmc::from_info(&info).unwrap());
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
        let b = bmc.clone();
        let joined = tokio::spawn(async move { b.set_power_state(PowerAction::On).await }).await;
        assert!(joined.unwrap_err().is_panic());
    }
}
