"""Per-minor facts about Kubernetes that hardway renders against: data only, no logic.

Covers Kubernetes minors 1.20 through 1.35.  The stored sources also hold CHANGELOG-1.36
(and 1.37), but the kubeadm-pinned etcd/CoreDNS/pause versions for 1.36 could not be found
in a primary or consistent secondary source, so 1.36+ is deliberately not covered here.

Every entry or block carries a comment naming where the fact comes from:

* ``kubernetes/kubernetes:CHANGELOG/CHANGELOG-1.XX.md`` - release notes of that minor
  (the "Changelog since v1.(XX-1).0" section of vXX.0 unless stated otherwise);
* ``kubernetes/kubernetes#NNNNN`` - the pull request that made the change (the PR number is
  the one quoted in the release note);
* ``kubernetes/website:<path>`` / ``kubernetes.io/docs/...`` - documentation pages;
* ``kubernetes/minikube:pkg/minikube/constants/constants_kubeadm_images.go`` - minikube's
  generated table of the images ``kubeadm config images list`` prints for each release
  (kubeadm takes them from ``cmd/kubeadm/app/constants/constants.go`` of that release);
* ``containerd/containerd:docs/cri/config.md`` - containerd's CRI plugin config guide.

Conventions:

* FLAGS: ``(first, last)``; ``first`` is "1.20" for flags that already existed in 1.20;
  ``last`` is the last minor that still accepts the flag, or None if it is still accepted in
  the newest covered minor (1.35).  A deprecated-but-accepted flag counts as present.
* CONFIG_API: the newest, non-deprecated apiVersion served by that minor for each kind.
* DEFAULTS: the versions kubeadm pins at the ``.0`` release of the minor (patch releases
  sometimes bump etcd; see comments).  Values are bare versions: the kubeadm image tags are
  ``etcd:<etcd>-0`` (every minor here), ``coredns/coredns:v<coredns>`` (1.21+;
  1.20 used ``coredns:1.7.0``) and ``pause:<pause>``.
"""

from __future__ import annotations

MINORS: tuple[str, ...] = (
    "1.20", "1.21", "1.22", "1.23", "1.24", "1.25", "1.26", "1.27",
    "1.28", "1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35",
)

# component -> flag -> (first minor the flag exists in, last minor it exists in or None)
FLAGS: dict[str, dict[str, tuple[str, str | None]]] = {
    "kube-apiserver": {
        # Long-standing flags, all present in 1.20 and still accepted in 1.35.
        # (kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/;
        # no removal of any of them appears in the Urgent Upgrade Notes / Deprecation
        # sections of CHANGELOG-1.21 .. CHANGELOG-1.35 as reviewed.)
        "--advertise-address": ("1.20", None),
        "--allow-privileged": ("1.20", None),
        "--anonymous-auth": ("1.20", None),
        # Deprecated in 1.24 together with --endpoint-reconciler-type=master-count
        # (CHANGELOG-1.24 Deprecation, kubernetes/kubernetes#108062; the note's
        # "--master-count" wording was corrected to "--apiserver-count" by #112435).
        # Still registered via fs.MarkDeprecated("apiserver-count", ...) in
        # cmd/kube-apiserver/app/options/options.go of the 1.30+ layout, and still warned
        # about (not rejected) in 2026 (kubernetes-sigs/kubespray#13262). Deprecated flags
        # are hidden from the generated docs, which misled some guides into calling it removed.
        "--apiserver-count": ("1.20", None),
        "--audit-log-maxage": ("1.20", None),
        "--audit-log-maxbackup": ("1.20", None),
        "--audit-log-maxsize": ("1.20", None),
        "--audit-log-path": ("1.20", None),
        "--audit-policy-file": ("1.20", None),
        "--authorization-mode": ("1.20", None),
        "--bind-address": ("1.20", None),
        "--client-ca-file": ("1.20", None),
        "--enable-admission-plugins": ("1.20", None),
        "--disable-admission-plugins": ("1.20", None),
        "--admission-control-config-file": ("1.20", None),
        "--encryption-provider-config": ("1.20", None),
        "--etcd-cafile": ("1.20", None),
        "--etcd-certfile": ("1.20", None),
        "--etcd-keyfile": ("1.20", None),
        "--etcd-servers": ("1.20", None),
        "--event-ttl": ("1.20", None),
        # REMOVED in 1.24: "Kube-apiserver: the insecure address flags --address,
        # --insecure-bind-address, --port and --insecure-port (inert since 1.20) are removed"
        # (CHANGELOG-1.24 Deprecation, kubernetes/kubernetes#106859).  In 1.20-1.23 they are
        # inert: --insecure-port may only be 0 (CHANGELOG-1.20 Urgent Upgrade Notes,
        # kubernetes/kubernetes#95856).
        "--insecure-port": ("1.20", "1.23"),
        "--insecure-bind-address": ("1.20", "1.23"),
        "--kubelet-certificate-authority": ("1.20", None),
        "--kubelet-client-certificate": ("1.20", None),
        "--kubelet-client-key": ("1.20", None),
        # REMOVED in 1.22: "kube-apiserver: the deprecated --kubelet-https flag is removed.
        # Connections to kubelets have used HTTPS unconditionally since 1.19."
        # (kubernetes/kubernetes#101178, merged 2021-04 for 1.22; deprecated in 1.19 by #91630.)
        "--kubelet-https": ("1.20", "1.21"),
        "--kubelet-preferred-address-types": ("1.20", None),
        "--profiling": ("1.20", None),
        "--proxy-client-cert-file": ("1.20", None),
        "--proxy-client-key-file": ("1.20", None),
        "--requestheader-allowed-names": ("1.20", None),
        "--requestheader-client-ca-file": ("1.20", None),
        "--requestheader-extra-headers-prefix": ("1.20", None),
        "--requestheader-group-headers": ("1.20", None),
        "--requestheader-username-headers": ("1.20", None),
        "--runtime-config": ("1.20", None),
        "--secure-port": ("1.20", None),
        "--service-account-issuer": ("1.20", None),
        "--service-account-key-file": ("1.20", None),
        "--service-account-signing-key-file": ("1.20", None),
        "--service-account-lookup": ("1.20", None),
        "--service-cluster-ip-range": ("1.20", None),
        "--service-node-port-range": ("1.20", None),
        "--tls-cert-file": ("1.20", None),
        "--tls-private-key-file": ("1.20", None),
        "--tls-cipher-suites": ("1.20", None),
        "--tls-min-version": ("1.20", None),
        "--enable-aggregator-routing": ("1.20", None),
        "--request-timeout": ("1.20", None),
        "--v": ("1.20", None),
    },
    "kube-controller-manager": {
        # kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/
        "--allocate-node-cidrs": ("1.20", None),
        "--authentication-kubeconfig": ("1.20", None),
        "--authorization-kubeconfig": ("1.20", None),
        "--bind-address": ("1.20", None),
        "--client-ca-file": ("1.20", None),
        "--cluster-cidr": ("1.20", None),
        "--cluster-name": ("1.20", None),
        "--cluster-signing-cert-file": ("1.20", None),
        "--cluster-signing-key-file": ("1.20", None),
        # Added in 1.19 as the replacement of --experimental-cluster-signing-duration
        # (CHANGELOG-1.19, kubernetes/kubernetes#91154).
        "--cluster-signing-duration": ("1.20", None),
        # REMOVED in 1.25: "The kube-controller-manager's deprecated
        # --experimental-cluster-signing-duration flag is now removed. Adapt your machinery to
        # use the --cluster-signing-duration flag that is available since v1.19."
        # (CHANGELOG-1.25, kubernetes/kubernetes#108476.)
        "--experimental-cluster-signing-duration": ("1.20", "1.24"),
        "--controllers": ("1.20", None),
        "--feature-gates": ("1.20", None),
        "--kubeconfig": ("1.20", None),
        "--leader-elect": ("1.20", None),
        # The insecure port: plain HTTP, no authentication, on --address:--port (default
        # 0.0.0.0:10252) in 1.20 and 1.21 unless --port=0 (cmd/kube-controller-manager/app/
        # options/options.go of 1.20.2: InsecureServing.AddUnqualifiedFlags, "Set to 0 to
        # disable"). No-op from 1.22: "Controller-manager: the following flags have no effect
        # and would be removed in v1.24: --port, --address. The insecure port flags --port may
        # only be set to 0 now." (CHANGELOG-1.22 Deprecation, kubernetes/kubernetes#96216).
        # REMOVED in 1.24: "The insecure address flags --address and --port in
        # kube-controller-manager have had no effect since v1.20 and are removed in v1.24."
        # (CHANGELOG-1.24 Deprecation, kubernetes/kubernetes#106860.)  So --port=0 is valid in
        # every minor that has the flag. --address is not rendered: with --port=0 nothing binds it.
        "--port": ("1.20", "1.23"),
        "--address": ("1.20", "1.23"),
        "--profiling": ("1.20", None),
        "--requestheader-client-ca-file": ("1.20", None),
        "--root-ca-file": ("1.20", None),
        "--secure-port": ("1.20", None),
        "--service-account-private-key-file": ("1.20", None),
        "--service-cluster-ip-range": ("1.20", None),
        "--terminated-pod-gc-threshold": ("1.20", None),
        "--tls-cert-file": ("1.20", None),
        "--tls-private-key-file": ("1.20", None),
        "--use-service-account-credentials": ("1.20", None),
        "--node-cidr-mask-size": ("1.20", None),
        "--v": ("1.20", None),
    },
    "kube-scheduler": {
        # kubernetes.io/docs/reference/command-line-tools-reference/kube-scheduler/
        "--authentication-kubeconfig": ("1.20", None),
        "--authorization-kubeconfig": ("1.20", None),
        "--bind-address": ("1.20", None),
        "--config": ("1.20", None),
        # Deprecated (ignored when --config is given) but still registered in
        # cmd/kube-scheduler/app/options/deprecated.go.
        "--kubeconfig": ("1.20", None),
        "--leader-elect": ("1.20", None),
        # The insecure port: plain HTTP healthz and metrics on --address:--port (default
        # 0.0.0.0:10251) in 1.20-1.22. With --config, as hardway runs it, these flags are
        # IGNORED: the config's healthzBindAddress/metricsBindAddress decide (SCHEDULER_CONFIG_
        # FIELDS below; 1.20.2 cmd/kube-scheduler/app/options/insecure_serving.go: "BindPort ...
        # overrides the structs above on ApplyTo, ignored on ApplyToFromLoadedConfig";
        # kubernetes/kubernetes#109900 "kube-scheduler: disabling insecure port does not work
        # (1.21)" shows --port=0 with a config still "Serving healthz insecurely on [::]:10251").
        # No-op since 1.23: "Kube-scheduler: the --port and --address flags have no effect and
        # would be removed in v1.24. The insecure port flags --port may only be set to 0 now."
        # (CHANGELOG-1.23, kubernetes/kubernetes#96345); the 1.23
        # cmd/kube-scheduler/app/options/deprecated.go registers them via
        # addDummyInsecureFlags ("TODO: remove these insecure flags in v1.24").
        # REMOVED in 1.24: "Removed kube-scheduler insecure flags. You can use --bind-address
        # and --secure-port instead." (CHANGELOG-1.24, kubernetes/kubernetes#106865).
        "--port": ("1.20", "1.23"),
        "--address": ("1.20", "1.23"),
        # Deprecated (ignored when --config is given) but still registered
        # (cmd/kube-scheduler/app/options/deprecated.go).
        "--profiling": ("1.20", None),
        "--secure-port": ("1.20", None),
        "--v": ("1.20", None),
    },
    "kubelet": {
        # kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
        "--config": ("1.20", None),
        # REMOVED in 1.27: "kubelet: remove deprecated flag --container-runtime"
        # (kubernetes/kubernetes#114017; deprecated in 1.24 by #107094 "will be removed in
        # 1.27 as the only valid value is 'remote'"; kubernetes.io blog 2023-03-17
        # "upcoming changes in Kubernetes v1.27 - removal of --container-runtime").
        "--container-runtime": ("1.20", "1.26"),
        # Still accepted; since 1.27 also settable as KubeletConfiguration
        # containerRuntimeEndpoint / imageServiceEndpoint (kubernetes/kubernetes#112136),
        # and the flags are marked deprecated in favour of the config file.
        "--container-runtime-endpoint": ("1.20", None),
        "--image-service-endpoint": ("1.20", None),
        "--kubeconfig": ("1.20", None),
        # REMOVED in 1.24 with dockershim: "Kubelet: the following dockershim related flags
        # are also removed along with dockershim --experimental-dockershim-root-directory,
        # --docker-endpoint, --image-pull-progress-deadline, --network-plugin, --cni-conf-dir,
        # --cni-bin-dir, --cni-cache-dir, --network-plugin-mtu."
        # (CHANGELOG-1.24, kubernetes/kubernetes#106907.)
        "--network-plugin": ("1.20", "1.23"),
        "--cni-bin-dir": ("1.20", "1.23"),
        "--cni-conf-dir": ("1.20", "1.23"),
        "--register-node": ("1.20", None),
        "--hostname-override": ("1.20", None),
        "--node-ip": ("1.20", None),
        # REMOVED in 1.35: "ACTION REQUIRED: Removed the --pod-infra-container-image flag from
        # kubelet command line." (CHANGELOG-1.35 Urgent Upgrade Notes,
        # kubernetes/kubernetes#133779).  Deprecated since 1.24 (CHANGELOG-1.24 Deprecation,
        # kubernetes/kubernetes#108045).  kubeadm stopped passing it in 1.35 (#133778).
        "--pod-infra-container-image": ("1.20", "1.34"),
        "--v": ("1.20", None),
        "--cgroup-root": ("1.20", None),
        "--bootstrap-kubeconfig": ("1.20", None),
        "--rotate-certificates": ("1.20", None),
    },
    "kube-proxy": {
        # kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/
        # No removal of these flags in any CHANGELOG 1.21-1.35 reviewed.
        "--config": ("1.20", None),
        "--hostname-override": ("1.20", None),
        "--v": ("1.20", None),
        "--cluster-cidr": ("1.20", None),
        "--kubeconfig": ("1.20", None),
    },
}

# KubeSchedulerConfiguration (kubescheduler.config.k8s.io) history:
#   v1beta1  added 1.19, removed 1.23   (kubernetes/enhancements:keps/sig-scheduling/
#            785-scheduler-component-config-api/README.md: "graduated it to beta in 1.19 as
#            v1beta1" ... "2021-09-01: Remove v1beta1 and the legacy policy config API")
#   v1beta2  added 1.22, deprecated 1.25, removed 1.28  (same KEP: "introduced v1beta2 and
#            v1beta3 in 1.22 and 1.23 respectively"; kubernetes/kubernetes#117649
#            "kubescheduler.config.k8s.io/v1beta2 is removed in v1.28")
#   v1beta3  added 1.23, deprecated 1.26, removed 1.29  (kubernetes/kubernetes#112257,
#            #119994; kubernetes/website:content/en/docs/reference/scheduling/config.md:
#            "KubeSchedulerConfiguration v1beta3 is deprecated in v1.26 and is removed in v1.29")
#   v1       GA in 1.25  (same config.md: feature-state for_k8s_version="v1.25" stable; KEP)
# KubeletConfiguration: only kubelet.config.k8s.io/v1beta1 exists for this kind in every
#   covered minor (kubelet.config.k8s.io/v1 holds CredentialProviderConfig only;
#   kubernetes.io/docs/reference/config-api/ lists "Kubelet Configuration (v1beta1)").
# KubeProxyConfiguration: kubeproxy.config.k8s.io/v1alpha1 in every covered minor
#   (staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go, current; the v1alpha2 proposal
#   kubernetes/kubernetes#121830 was closed unmerged; docs list only
#   "kube-proxy Configuration (v1alpha1)").  Fields hardway renders - conntrack.maxPerCore,
#   clusterCIDR, mode - exist in v1alpha1 throughout (same types.go:
#   KubeProxyConntrackConfiguration.MaxPerCore `json:"maxPerCore"`, ClusterCIDR
#   `json:"clusterCIDR"`, Mode `json:"mode"`).
# EncryptionConfiguration / AdmissionConfiguration: apiserver.config.k8s.io/v1
#   (kubernetes.io/docs/reference/config-api/apiserver-config.v1/; AdmissionConfiguration
#   promoted to v1 in 1.17 by kubernetes/kubernetes#85098).
# Policy (audit policy): audit.k8s.io/v1; v1alpha1/v1beta1 removed in 1.24 (CHANGELOG-1.24:
#   "--audit-log-version and --audit-webhook-version now only support the default value of
#   audit.k8s.io/v1", kubernetes/kubernetes#108092).

# minor -> kind -> apiVersion hardway renders (newest non-deprecated served by that minor)
CONFIG_API: dict[str, dict[str, str]] = {
    "1.20": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1beta1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.21": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1beta1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.22": {  # v1beta2 introduced in 1.22
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1beta2",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.23": {  # v1beta3 introduced in 1.23; v1beta1 removed
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1beta3",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.24": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1beta3",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.25": {  # v1 GA in 1.25; v1beta2 deprecated
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.26": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.27": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.28": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.29": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.30": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.31": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.32": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.33": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.34": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
    "1.35": {
        "KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
        "KubeSchedulerConfiguration": "kubescheduler.config.k8s.io/v1",
        "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1",
        "EncryptionConfiguration": "apiserver.config.k8s.io/v1",
        "Policy": "audit.k8s.io/v1",
        "AdmissionConfiguration": "apiserver.config.k8s.io/v1",
    },
}

# KubeletConfiguration (kubelet.config.k8s.io/v1beta1) fields hardway may render -> first minor.
# "1.20" means the field already existed in 1.20.
KUBELET_CONFIG_FIELDS_SINCE: dict[str, str] = {
    # Pre-1.20 fields, verified present in staging/src/k8s.io/kubelet/config/v1beta1/types.go
    # (1.24-era copy) with Dynamic-Kubelet-Config-era (pre-1.20) doc comments: tlsCipherSuites,
    # rotateCertificates, serverTLSBootstrap, cgroupRoot, podCIDR, resolvConf,
    # protectKernelDefaults.
    "tlsCipherSuites": "1.20",
    "rotateCertificates": "1.20",
    "serverTLSBootstrap": "1.20",
    "cgroupRoot": "1.20",
    "podCIDR": "1.20",
    "resolvConf": "1.20",
    "protectKernelDefaults": "1.20",
    # seccompDefault: added with the SeccompDefault feature gate (alpha) in 1.22
    # (kubernetes/enhancements KEP-2413 "seccomp by default"); graduated GA in 1.27
    # ("Graduated seccomp profile defaulting to GA ... seccompDefault kubelet configuration
    # field", CHANGELOG-1.27).  Until then the field "requires the corresponding
    # SeccompDefault feature gate to be enabled as well" (1.24-era v1beta1 types.go).
    # Presence confirmed in the 1.24-era types.go; the 1.22 start is from the KEP timeline.
    "seccompDefault": "1.22",
    # registerWithTaints: "The Kubelet's --register-with-taints option is now available via
    # the Kubelet config file field registerWithTaints" (kubernetes/kubernetes#105437, 1.23).
    "registerWithTaints": "1.23",
    # registerNode: confirmed in the 1.24-era v1beta1 types.go ("registerNode enables
    # automatic registration with the apiserver. Default: true"), next to registerWithTaints.
    # Whether it already shipped in 1.23 could not be confirmed, so the conservative 1.24 is
    # used (NOT 1.27).
    "registerNode": "1.24",
    # localStorageCapacityIsolation: added when LocalStorageCapacityIsolation went GA in 1.25
    # (kubernetes/kubernetes#111513; "kubelet config option that will be available in
    # v1.25.0").
    "localStorageCapacityIsolation": "1.25",
    # containerRuntimeEndpoint / imageServiceEndpoint: "Kubelet: migrate
    # --container-runtime-endpoint and --image-service-endpoint to kubelet config"
    # (CHANGELOG-1.27, kubernetes/kubernetes#112136).
    "containerRuntimeEndpoint": "1.27",
    "imageServiceEndpoint": "1.27",
    # failCgroupV1: "Introduced a new boolean kubelet flag --fail-cgroupv1"
    # (CHANGELOG-1.31 API Change, kubernetes/kubernetes#126031, KEP-4569 "cgroup v1 maintenance
    # mode"); the config field came with it (kubernetes/website:content/en/docs/reference/
    # config-api/kubelet-config.v1beta1.md: "failCgroupV1 bool ... Default: false").
    "failCgroupV1": "1.31",
}

# KubeSchedulerConfiguration fields (in the apiVersion CONFIG_API names for the minor) ->
# (first, last) minor, as in FLAGS.
SCHEDULER_CONFIG_FIELDS: dict[str, tuple[str, str | None]] = {
    # The scheduler's insecure (plain HTTP, unauthenticated) healthz and metrics listener.
    # kubescheduler.config.k8s.io/v1beta1 (1.20, 1.21) and v1beta2 (1.22) have both fields,
    # "defaulting to 0.0.0.0:10251" (staging/src/k8s.io/kube-scheduler/config/v1beta1/types.go
    # of 1.20.2; the 1.22-era v1beta2/types.go). Defaulting replaces an empty or unparsable
    # value by 0.0.0.0:10251 (pkg/scheduler/apis/config/v1beta1/defaults.go) and validation
    # refuses port 0 (IsValidSocketAddr -> IsValidPortNum, 1..65535), so the config cannot turn
    # the listener off, only bind it to 127.0.0.1. Gone in 1.23: "metricsBindAddress and
    # healthzBindAddress fields from kubescheduler.config.k8s.io/v1beta1 are no-op and expected
    # to be empty. Removed in kubescheduler.config.k8s.io/v1beta2 completely." (CHANGELOG-1.23,
    # kubernetes/kubernetes#96345); hardway renders v1beta3 for 1.23 and v1 from 1.25.
    "healthzBindAddress": ("1.20", "1.22"),
    "metricsBindAddress": ("1.20", "1.22"),
}

# KubeletConfiguration defaults that changed within the covered minors:
# field -> ((first minor, default from then on), ...), oldest first.
KUBELET_CONFIG_DEFAULTS: dict[str, tuple[tuple[str, object], ...]] = {
    # false when added in 1.31 (above); true from 1.35: "ACTION REQUIRED: failCgroupV1 will be
    # set to true from 1.35. This means that nodes will not start on a cgroup v1 by default"
    # (CHANGELOG-1.35 Deprecation, kubernetes/kubernetes#134298, KEP-5573); the 1.35
    # kubelet-config.v1beta1 reference says "Default: true".
    "failCgroupV1": (("1.31", False), ("1.35", True)),
}

# minor -> versions kubeadm pinned at the .0 release (see module docstring for image tags).
# Source for 1.20-1.32: kubernetes/minikube:pkg/minikube/constants/constants_kubeadm_images.go
# (entries "v1.XX.0"), which records kubeadm's per-release image list.
# Cross-checks: kubernetes/kubernetes:cmd/kubeadm/app/constants/constants.go (release-1.32
# copy: DefaultEtcdVersion "3.5.16-0", CoreDNSVersion "v1.11.3", PauseVersion "3.10");
# `kubeadm config images list` outputs quoted in public guides for v1.21.0, v1.22.0,
# v1.33.0, v1.34.0 and v1.35.0.
DEFAULTS: dict[str, dict[str, str]] = {
    "1.20": {"etcd": "3.4.13", "coredns": "1.7.0", "pause": "3.2"},
    "1.21": {"etcd": "3.4.13", "coredns": "1.8.0", "pause": "3.4.1"},
    "1.22": {"etcd": "3.5.0", "coredns": "1.8.4", "pause": "3.5"},
    # 1.23.14 moved etcd to 3.5.5-0, 1.23.15+ to 3.5.6-0 (minikube table).
    "1.23": {"etcd": "3.5.1", "coredns": "1.8.6", "pause": "3.6"},
    # 1.24.8 -> 3.5.5-0, 1.24.9+ -> 3.5.6-0 (minikube table).
    "1.24": {"etcd": "3.5.3", "coredns": "1.8.6", "pause": "3.7"},
    # 1.25.4 -> 3.5.5-0, 1.25.5+ -> 3.5.6-0, 1.25.15+ -> 3.5.9-0 (minikube table).
    "1.25": {"etcd": "3.5.4", "coredns": "1.9.3", "pause": "3.8"},
    "1.26": {"etcd": "3.5.6", "coredns": "1.9.3", "pause": "3.9"},
    "1.27": {"etcd": "3.5.7", "coredns": "1.10.1", "pause": "3.9"},
    "1.28": {"etcd": "3.5.9", "coredns": "1.10.1", "pause": "3.9"},
    "1.29": {"etcd": "3.5.10", "coredns": "1.11.1", "pause": "3.9"},
    "1.30": {"etcd": "3.5.12", "coredns": "1.11.1", "pause": "3.9"},
    # 1.31.1+ moved CoreDNS to v1.11.3 (minikube table).
    "1.31": {"etcd": "3.5.15", "coredns": "1.11.1", "pause": "3.10"},
    # minikube table v1.32.0-beta.0 + release-1.32 constants.go (later 1.32 patches raise
    # SupportedEtcdVersion[32] to 3.5.24-0 while DefaultEtcdVersion stays 3.5.16-0).
    "1.32": {"etcd": "3.5.16", "coredns": "1.11.3", "pause": "3.10"},
    # `kubeadm config images list` for v1.33.0: coredns v1.12.0, pause 3.10, etcd 3.5.21-0
    # (two independent public transcripts); kubeadm etcd-bump doc shows
    # DefaultEtcdVersion "3.5.21-0" / SupportedEtcdVersion 30-33 -> "3.5.21-0".
    "1.33": {"etcd": "3.5.21", "coredns": "1.12.0", "pause": "3.10"},
    # `minikube image ls` at v1.34.0 (kubeadm images): etcd 3.6.4-0, coredns v1.12.1,
    # pause 3.10.1; SupportedEtcdVersion[34] = "3.6.4-0" in a 1.34-era constants.go excerpt.
    "1.34": {"etcd": "3.6.4", "coredns": "1.12.1", "pause": "3.10.1"},
    # Image lists for v1.35.0 (etcd 3.6.6-0, coredns v1.13.1, pause 3.10.1); a 1.35
    # constants.go fixture quotes CoreDNSVersion "v1.13.1", PauseVersion "3.10.1".
    "1.35": {"etcd": "3.6.6", "coredns": "1.13.1", "pause": "3.10.1"},
}

# --------------------------------------------------------------------------------------
# containerd CRI configuration facts (not code; for the containerd config renderer)
# Source: containerd/containerd:docs/cri/config.md ("CRI Plugin Config Guide"), main branch.
#
# Config versions:
#   "version = 3" was introduced in containerd v2.0.  "version = 2" (containerd 1.x,
#   introduced in 1.3) is still supported by 2.x and converted automatically.
#   "version = 1" was removed in containerd 2.0.
#
# containerd 1.x  (version = 2), all under [plugins."io.containerd.grpc.v1.cri"]:
#   sandbox (pause) image:
#       [plugins."io.containerd.grpc.v1.cri"]
#         sandbox_image = "registry.k8s.io/pause:3.10"
#   restrict_oom_score_adj:
#       [plugins."io.containerd.grpc.v1.cri"]
#         restrict_oom_score_adj = false
#   systemd cgroup driver:
#       [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
#         SystemdCgroup = true
#     (runtime: [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
#      runtime_type = "io.containerd.runc.v2")
#   snapshotter:
#       [plugins."io.containerd.grpc.v1.cri".containerd]  snapshotter = "overlayfs"
#   CNI:
#       [plugins."io.containerd.grpc.v1.cri".cni]
#         bin_dir = "/opt/cni/bin"
#         conf_dir = "/etc/cni/net.d"
#   registry hosts dir:
#       [plugins."io.containerd.grpc.v1.cri".registry]  config_path = ""
#
# containerd 2.x  (version = 3): the CRI plugin is split into several plugin IDs.
#   sandbox (pause) image  -> pinned_images.sandbox in the *images* plugin:
#       [plugins.'io.containerd.cri.v1.images'.pinned_images]
#         sandbox = 'registry.k8s.io/pause:3.10'
#   restrict_oom_score_adj -> *runtime* plugin:
#       [plugins.'io.containerd.cri.v1.runtime']
#         restrict_oom_score_adj = false
#   systemd cgroup driver  -> *runtime* plugin:
#       [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
#         SystemdCgroup = true
#     (runtime: [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
#      runtime_type = 'io.containerd.runc.v2'; default_runtime_name = 'runc' under
#      [plugins.'io.containerd.cri.v1.runtime'.containerd])
#   CNI                    -> *runtime* plugin:
#       [plugins.'io.containerd.cri.v1.runtime'.cni]
#         bin_dir = '/opt/cni/bin'
#         conf_dir = '/etc/cni/net.d'
#   snapshotter            -> *images* plugin:
#       [plugins.'io.containerd.cri.v1.images']  snapshotter = 'overlayfs'
#   registry hosts dir     -> [plugins.'io.containerd.cri.v1.images'.registry]  config_path = ''
#   streaming server stays in the old ID:
#       [plugins.'io.containerd.grpc.v1.cri']  stream_server_address, stream_server_port, ...
#
# Kubelet side: cgroupDriver: "systemd" in KubeletConfiguration must match SystemdCgroup
# (same doc).  From Kubernetes 1.35 the kubelet no longer has --pod-infra-container-image, so
# the pause image is pinned only through containerd (sandbox_image / pinned_images.sandbox).
# --------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------
# etcd's offline tools, by etcd version (not by Kubernetes minor: spec.artifacts.versions.etcd
# is chosen on its own). feature -> first etcd version that has it.
#
# * etcdutl: the offline tool (snapshot status/restore on files, no server), new in v3.5.0;
#   `etcdctl snapshot status|restore` are deprecated in 3.5 and removed in 3.6
#   (etcd-io/etcd:CHANGELOG/CHANGELOG-3.5.md v3.5.0 "etcdutl"; CHANGELOG-3.6.md; etcd.io
#   docs v3.6 op-guide/recovery uses `etcdutl snapshot status|restore`). The release tarball
#   etcd-vV-linux-ARCH.tar.gz carries it beside etcd and etcdctl from 3.5.0 on.
# * restore --bump-revision N --mark-compacted: etcd-io/etcd#16029 (main, 3.6) and its
#   release-3.5 backport etcd-io/etcd#16165, first released in v3.5.10. Kubernetes' "Operating
#   etcd clusters" page (Restoring an etcd cluster) recommends `--bump-revision 1000000000
#   --mark-compacted` so that no watcher sees revisions go back.
ETCD_SINCE: dict[str, str] = {
    "etcdutl": "3.5.0",
    "restore-bump-revision": "3.5.10",
}
