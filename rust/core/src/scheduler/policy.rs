//! Which scheduling policies are on. They combine: each one adds an ordering or a rule on top
//! of the basic hand-out (an executor is bound to one session at a time, a session never gets
//! more executors than it has unfinished tasks or than its `max_executors`, and always keeps
//! its `min_executors`). The daemon reads them from the `[scheduler]` table of its config.

use crate::error::{FlameError, Result};

/// The policies of a scheduler. See [`Policies::NAMES`] for what each one does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policies {
    /// Strictly higher-priority sessions get executors first, and take them back from lower
    /// ones as their current tasks finish.
    pub priority: bool,
    /// Sessions of equal priority split executors in proportion to their weight; a session
    /// under its share reclaims executors from the one furthest over it, as tasks finish.
    pub fair_share: bool,
    /// Tenants (a session's `user`, or its owner client) split executors equally first;
    /// priority and weights then order the sessions of each tenant.
    pub tenant_fair_share: bool,
    /// A higher-priority session does not wait: it kills a lower-priority running task,
    /// which goes back to its queue without being charged an attempt.
    pub preemption: bool,
    /// Prefer an idle executor that last served the same session, then the same service;
    /// and for a task that reads objects, an executor of its session on a node holding most
    /// of its bytes — waiting for one at most `SchedulerConfig::data_wait`, then anywhere —
    /// with new executors started (or idle ones taken) on those nodes first.
    pub data_aware: bool,
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            priority: true,
            fair_share: true,
            tenant_fair_share: false,
            preemption: false,
            data_aware: true,
        }
    }
}

impl Policies {
    /// The names accepted by [`Policies::from_names`], in a stable order.
    pub const NAMES: [&'static str; 5] = [
        "priority",
        "fair_share",
        "tenant_fair_share",
        "preemption",
        "data_aware",
    ];

    /// Exactly the named policies; every other one off.
    ///
    /// # Errors
    /// `InvalidArgument` naming an unknown policy, or a combination that cannot work
    /// (see [`Policies::validate`]).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self> {
        let mut p = Self {
            priority: false,
            fair_share: false,
            tenant_fair_share: false,
            preemption: false,
            data_aware: false,
        };
        for name in names {
            let flag = match name.as_ref() {
                "priority" => &mut p.priority,
                "fair_share" => &mut p.fair_share,
                "tenant_fair_share" => &mut p.tenant_fair_share,
                "preemption" => &mut p.preemption,
                "data_aware" => &mut p.data_aware,
                other => {
                    return Err(FlameError::InvalidArgument(format!(
                        "unknown scheduler policy '{other}'; the policies are: {}",
                        Self::NAMES.join(", ")
                    )))
                }
            };
            *flag = true;
        }
        p.validate()?;
        Ok(p)
    }

    /// # Errors
    /// `InvalidArgument` when a policy needs another that is off: preemption acts on
    /// priorities, and the tenant level splits what fair share then divides.
    pub fn validate(&self) -> Result<()> {
        if self.preemption && !self.priority {
            return Err(FlameError::InvalidArgument(
                "scheduler policy 'preemption' needs 'priority' (it preempts lower priorities)"
                    .into(),
            ));
        }
        if self.tenant_fair_share && !self.fair_share {
            return Err(FlameError::InvalidArgument(
                "scheduler policy 'tenant_fair_share' needs 'fair_share'".into(),
            ));
        }
        Ok(())
    }

    /// The names of the policies that are on.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [
            self.priority,
            self.fair_share,
            self.tenant_fair_share,
            self.preemption,
            self.data_aware,
        ];
        Self::NAMES
            .iter()
            .zip(on)
            .filter_map(|(n, on)| on.then_some(*n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_named() {
        let p = Policies::from_names(&["priority", "preemption"]).unwrap();
        assert!(p.priority && p.preemption && !p.fair_share && !p.data_aware);
        assert_eq!(p.names(), vec!["priority", "preemption"]);
        assert_eq!(
            Policies::from_names(&Policies::default().names()).unwrap(),
            Policies::default()
        );
        let err = Policies::from_names(&["fair-share"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'fair-share'") && err.contains("fair_share"),
            "{err}"
        );
        let err = Policies::from_names(&["preemption"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs 'priority'"), "{err}");
        let err = Policies::from_names(&["tenant_fair_share"]).unwrap_err();
        assert!(err.to_string().contains("needs 'fair_share'"));
        assert_eq!(Policies::from_names::<&str>(&[]).unwrap().names().len(), 0);
    }
}
