//! OS definitions: mirrors, trees, repos and templates they name.

use std::collections::BTreeMap;

use super::hosts::Merged;
use super::{Cx, trim_slashes};
use crate::model::*;
use crate::parse::{self, NAME_RULE};

/// The GRUB config template an OS gets unless it names one; the render
/// crate carries a built-in copy.
pub const GRUB_TEMPLATE: &str = "grub.cfg.j2";

impl Cx {
    pub(super) fn oses(
        &mut self,
        set: &Merged<'_>,
        appliance: &Appliance,
        templates: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Os> {
        let mut out = BTreeMap::new();
        for (name, (file, os)) in &set.oses {
            let w = &os.value;
            if !appliance.mirrors.contains_key(&w.mirror.value) {
                self.err(file, w.mirror.referenced, format!("OS `{name}` uses mirror `{}`, which is not in the appliance config's mirrors", w.mirror.value));
            }
            let mut repos = Vec::new();
            for r in &w.repos {
                let mirror = r.value.mirror.as_ref().map_or(&w.mirror, |m| m);
                if !appliance.mirrors.contains_key(&mirror.value) {
                    self.err(
                        file,
                        mirror.referenced,
                        format!(
                            "repo `{}` uses mirror `{}`, which is not configured",
                            r.value.name, mirror.value
                        ),
                    );
                }
                if !parse::is_name(&r.value.name) {
                    self.err(
                        file,
                        r.referenced,
                        format!("repo name `{}` {NAME_RULE}", r.value.name),
                    );
                }
                repos.push(Repo {
                    name: r.value.name.clone(),
                    mirror: mirror.value.clone(),
                    path: trim_slashes(&r.value.path),
                });
            }
            let ipxe = w.ipxe.as_ref().map_or("boot.ipxe.j2", |t| t.value.as_str());
            let grub_cfg = w
                .grub_cfg
                .as_ref()
                .map_or(GRUB_TEMPLATE, |t| t.value.as_str());
            for (tpl, at) in [
                (w.kickstart.value.as_str(), w.kickstart.referenced),
                (
                    ipxe,
                    w.ipxe.as_ref().map_or(os.referenced, |t| t.referenced),
                ),
            ] {
                if !templates.contains_key(tpl) {
                    self.err(
                        file,
                        at,
                        format!(
                            "template `{tpl}` does not exist in {}",
                            appliance.templates_dir.display()
                        ),
                    );
                }
            }
            // A shipped GRUB template the directory lacks is built in (see
            // the render crate); any other name must exist.
            if grub_cfg != GRUB_TEMPLATE && !templates.contains_key(grub_cfg) {
                let at = w.grub_cfg.as_ref().map_or(os.referenced, |t| t.referenced);
                self.err(
                    file,
                    at,
                    format!(
                        "template `{grub_cfg}` does not exist in {}",
                        appliance.templates_dir.display()
                    ),
                );
            }
            let arch = match &w.arch {
                None => Some(Arch::X86_64),
                Some(a) => self.check(file, a.referenced, "arch", a.value.parse::<Arch>()),
            };
            let (default_shim, default_grub) = arch.unwrap_or(Arch::X86_64).default_shim_and_grub();
            let shim = trim_slashes(w.shim.as_deref().unwrap_or(default_shim));
            let grub = trim_slashes(w.grub.as_deref().unwrap_or(default_grub));
            let dir = |p: &str| p.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
            if dir(&shim) != dir(&grub) {
                self.err(file, os.referenced, format!("OS `{name}`: shim `{shim}` and grub `{grub}` must be in one directory: the shim loads GRUB from its own"));
            }
            let grub_name = grub.rsplit('/').next().unwrap_or_default();
            if grub_name != default_grub.rsplit('/').next().unwrap_or_default() {
                self.err(
                    file,
                    os.referenced,
                    format!(
                        "OS `{name}`: grub `{grub}` must be named `{}`: the name the shim loads",
                        default_grub.rsplit('/').next().unwrap_or_default()
                    ),
                );
            }
            for (what, p) in [
                ("tree", &w.tree),
                ("kernel", w.kernel.as_ref().unwrap_or(&String::new())),
                ("initrd", w.initrd.as_ref().unwrap_or(&String::new())),
                ("shim", &shim),
                ("grub", &grub),
            ] {
                if p.split('/').any(|c| c == "..") {
                    self.err(
                        file,
                        os.referenced,
                        format!("OS `{name}`: {what} path `{p}` must not contain `..`"),
                    );
                }
            }
            out.insert(
                name.clone(),
                Os {
                    name: name.clone(),
                    title: w.title.clone().unwrap_or_else(|| name.clone()),
                    mirror: w.mirror.value.clone(),
                    tree: trim_slashes(&w.tree),
                    arch: arch.unwrap_or(Arch::X86_64),
                    kernel: trim_slashes(w.kernel.as_deref().unwrap_or("images/pxeboot/vmlinuz")),
                    initrd: trim_slashes(
                        w.initrd.as_deref().unwrap_or("images/pxeboot/initrd.img"),
                    ),
                    shim,
                    grub,
                    repos,
                    kickstart_template: w.kickstart.value.clone(),
                    ipxe_template: ipxe.to_owned(),
                    grub_template: grub_cfg.to_owned(),
                    boot_args: w.boot_args.clone().unwrap_or_default(),
                    gpg_key: w.gpg_key.clone(),
                },
            );
        }
        out
    }
}
