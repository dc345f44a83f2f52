//! The Pod Security Standards' `restricted` profile (which includes `baseline`), written from
//! the standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/, the
//! controls of the `baseline` and `restricted` tables, policy version `latest` as of 1.33) and
//! checked the way Pod Security admission evaluates a pod
//! (staging/src/k8s.io/pod-security-admission/policy/check_*.go). Each violation names its
//! control, like the admission's `violates PodSecurity "restricted:latest": ...` message.

use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};
use runyard_runners::kube::k8s_openapi;

/// The violations of `restricted:latest` by a pod (empty: allowed).
pub fn restricted_violations(spec: &PodSpec) -> Vec<String> {
    let mut v = Vec::new();
    let psc = spec.security_context.clone().unwrap_or_default();
    // (name, security context) of every container, init and ephemeral included.
    let mut containers: Vec<(String, Option<SecurityContext>)> = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        containers.push((c.name.clone(), c.security_context.clone()));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        containers.push((c.name.clone(), c.security_context.clone()));
    }

    // ---- baseline ----
    // Host Namespaces: hostNetwork, hostPID, hostIPC unset or false.
    if spec.host_network == Some(true) {
        v.push("host namespaces (hostNetwork=true)".into());
    }
    if spec.host_pid == Some(true) {
        v.push("host namespaces (hostPID=true)".into());
    }
    if spec.host_ipc == Some(true) {
        v.push("host namespaces (hostIPC=true)".into());
    }
    // Host Ports: unset or 0.
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            if p.host_port.is_some_and(|h| h != 0) {
                v.push(format!("hostPort (container {:?})", c.name));
            }
        }
    }
    // HostPath Volumes: forbidden.
    for vol in spec.volumes.iter().flatten() {
        if vol.host_path.is_some() {
            v.push(format!("hostPath volumes ({:?})", vol.name));
        }
    }
    // /proc Mount Type: Default; Privileged Containers: not true; Seccomp: not Unconfined;
    // capabilities beyond the baseline set; SELinux type among the allowed ones.
    for (name, sc) in &containers {
        let Some(sc) = sc else { continue };
        if sc.privileged == Some(true) {
            v.push(format!(
                "privileged (container {name:?} must not set privileged=true)"
            ));
        }
        if sc.proc_mount.as_deref().is_some_and(|p| p != "Default") {
            v.push(format!("procMount (container {name:?})"));
        }
        if let Some(t) = sc
            .se_linux_options
            .as_ref()
            .and_then(|o| o.type_.as_deref())
        {
            if ![
                "",
                "container_t",
                "container_init_t",
                "container_kvm_t",
                "container_engine_t",
            ]
            .contains(&t)
            {
                v.push(format!("seLinuxOptions (container {name:?})"));
            }
        }
    }
    // Sysctls: only the safe set.
    const SAFE_SYSCTLS: &[&str] = &[
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    ];
    for s in psc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            v.push(format!("forbidden sysctls ({})", s.name));
        }
    }

    // ---- restricted ----
    // Volume Types: only configMap, csi, downwardAPI, emptyDir, ephemeral,
    // persistentVolumeClaim, projected, secret.
    for vol in spec.volumes.iter().flatten() {
        let allowed = vol.config_map.is_some()
            || vol.csi.is_some()
            || vol.downward_api.is_some()
            || vol.empty_dir.is_some()
            || vol.ephemeral.is_some()
            || vol.persistent_volume_claim.is_some()
            || vol.projected.is_some()
            || vol.secret.is_some();
        if !allowed {
            v.push(format!("restricted volume types ({:?})", vol.name));
        }
    }
    let pod_non_root = psc.run_as_non_root == Some(true);
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    if pod_seccomp == Some("Unconfined") {
        v.push("seccompProfile (pod must not set type Unconfined)".into());
    }
    if psc.run_as_user == Some(0) {
        v.push("runAsUser=0 (pod)".into());
    }
    for (name, sc) in &containers {
        let sc = sc.clone().unwrap_or_default();
        // Privilege Escalation: allowPrivilegeEscalation must be false.
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!(
                "allowPrivilegeEscalation != false (container {name:?} must set \
                 securityContext.allowPrivilegeEscalation=false)"
            ));
        }
        // Running as Non-root: runAsNonRoot true on the pod or each container, never false.
        let non_root = match sc.run_as_non_root {
            Some(false) => false,
            Some(true) => true,
            None => pod_non_root,
        };
        if !non_root {
            v.push(format!(
                "runAsNonRoot != true (pod or container {name:?} must set \
                 securityContext.runAsNonRoot=true)"
            ));
        }
        // Running as Non-root user: runAsUser not 0.
        if sc.run_as_user == Some(0) {
            v.push(format!("runAsUser=0 (container {name:?})"));
        }
        // Seccomp: RuntimeDefault or Localhost, on the pod or each container.
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.clone())
            .or(pod_seccomp.map(str::to_string));
        match seccomp.as_deref() {
            Some("RuntimeDefault" | "Localhost") => {}
            _ => v.push(format!(
                "seccompProfile (pod or container {name:?} must set \
                 securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
            )),
        }
        // Capabilities: drop ALL; add only NET_BIND_SERVICE.
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|c| c == "ALL") {
            v.push(format!(
                "unrestricted capabilities (container {name:?} must set \
                 securityContext.capabilities.drop=[\"ALL\"])"
            ));
        }
        for c in caps.add.iter().flatten() {
            if c != "NET_BIND_SERVICE" {
                v.push(format!(
                    "unrestricted capabilities (container {name:?} adds {c})"
                ));
            }
        }
    }
    v
}
