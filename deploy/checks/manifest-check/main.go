// Command manifest-check checks Kubernetes manifests rendered by `helm template` without a
// cluster: each document is decoded strictly into its Kubernetes API type (k8s.io/api; the
// Prometheus Operator's types for a ServiceMonitor), so an unknown or misplaced field, a wrong
// type or a duplicate key is an error, and an unknown kind is one too. Names and labels are
// checked as the API server checks them.
//
// Then the rules of the fhirbots chart:
//
//   - every pod template (Deployments and Jobs) runs as non-root with a read-only root
//     filesystem, no privilege escalation, ALL capabilities dropped, seccomp RuntimeDefault, an
//     emptyDir at /tmp and resource requests;
//
//   - every Deployment's container has startup and liveness probes on /livez and a readiness
//     probe on /readyz, on a port it declares;
//
//   - with -roles: a Deployment running `serve --api-only` and one running `worker ROLE` per
//     role, and a pre-install/pre-upgrade hook Job running `migrate`;
//
//   - references hold: selectors match pod labels, Services' target ports exist, HPAs and
//     Ingresses name existing Deployments and Services, a ServiceMonitor's port exists on the
//     Services it selects, and a NetworkPolicy with egress rules covers every pod.
//
//     manifest-check [-roles relay,matcher,...] RENDERED.yaml
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// newObject is the typed object of each kind the chart may render.
var newObject = map[string]func() any{
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                            func() any { return &batchv1.Job{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":            func() any { return &networkingv1.Ingress{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
}

type manifests struct {
	deployments     []*appsv1.Deployment
	jobs            []*batchv1.Job
	services        []*corev1.Service
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	pdbs            []*policyv1.PodDisruptionBudget
	policies        []*networkingv1.NetworkPolicy
	ingresses       []*networkingv1.Ingress
	serviceMonitors []*monitoringv1.ServiceMonitor
	count           int
}

func main() {
	roles := flag.String("roles", "", "comma-separated worker roles that must each have a Deployment")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: manifest-check [-roles R1,R2,...] RENDERED.yaml")
		os.Exit(2)
	}
	path := flag.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	m, problems := decode(data)
	problems = append(problems, podRules(m)...)
	problems = append(problems, referenceRules(m)...)
	if *roles != "" {
		problems = append(problems, roleRules(m, strings.Split(*roles, ","))...)
	}
	sort.Strings(problems)
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "%s: %s\n", path, p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("%s: %d objects decode strictly into their Kubernetes types; chart rules pass\n", path, m.count)
}

// decode splits the YAML stream and decodes every document strictly into its type.
func decode(data []byte) (*manifests, []string) {
	m := &manifests{}
	var problems []string
	reader := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, append(problems, "reading: "+err.Error())
		}
		var head struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Metadata   metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			problems = append(problems, "document: "+err.Error())
			continue
		}
		if head.Kind == "" && head.APIVersion == "" {
			continue // an empty document (a template that rendered nothing)
		}
		id := fmt.Sprintf("%s %s", head.Kind, head.Metadata.Name)
		newObj, ok := newObject[head.APIVersion+"/"+head.Kind]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: unknown kind %s/%s", id, head.APIVersion, head.Kind))
			continue
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		m.count++
		problems = append(problems, metaRules(id, head.Kind, head.Metadata)...)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, o)
		case *batchv1.Job:
			m.jobs = append(m.jobs, o)
		case *corev1.Service:
			m.services = append(m.services, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.hpas = append(m.hpas, o)
		case *policyv1.PodDisruptionBudget:
			m.pdbs = append(m.pdbs, o)
		case *networkingv1.NetworkPolicy:
			m.policies = append(m.policies, o)
		case *networkingv1.Ingress:
			m.ingresses = append(m.ingresses, o)
		case *monitoringv1.ServiceMonitor:
			m.serviceMonitors = append(m.serviceMonitors, o)
		}
	}
	return m, problems
}

// metaRules: the name and labels as the API server validates them.
func metaRules(id, kind string, meta metav1.ObjectMeta) []string {
	var problems []string
	nameErrors := validation.IsDNS1123Subdomain(meta.Name)
	if kind == "Service" {
		nameErrors = validation.IsDNS1035Label(meta.Name)
	}
	for _, e := range nameErrors {
		problems = append(problems, fmt.Sprintf("%s: name: %s", id, e))
	}
	for key, value := range meta.Labels {
		for _, e := range validation.IsQualifiedName(key) {
			problems = append(problems, fmt.Sprintf("%s: label key %q: %s", id, key, e))
		}
		for _, e := range validation.IsValidLabelValue(value) {
			problems = append(problems, fmt.Sprintf("%s: label %s value %q: %s", id, key, value, e))
		}
	}
	return problems
}

type podTemplate struct {
	id       string
	template corev1.PodTemplateSpec
	probed   bool // a long-running server: probes required
}

func (m *manifests) pods() []podTemplate {
	var pods []podTemplate
	for _, d := range m.deployments {
		pods = append(pods, podTemplate{"Deployment " + d.Name, d.Spec.Template, true})
	}
	for _, j := range m.jobs {
		pods = append(pods, podTemplate{"Job " + j.Name, j.Spec.Template, false})
	}
	return pods
}

func podRules(m *manifests) []string {
	var problems []string
	for _, p := range m.pods() {
		problems = append(problems, securityRules(p)...)
		if p.probed {
			problems = append(problems, probeRules(p)...)
		}
	}
	return problems
}

func securityRules(p podTemplate) []string {
	var problems []string
	say := func(format string, args ...any) {
		problems = append(problems, p.id+": "+fmt.Sprintf(format, args...))
	}
	spec := p.template.Spec
	pod := spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	tmp := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.EmptyDir != nil {
			tmp[v.Name] = true
		}
	}
	containers := slices.Concat(spec.InitContainers, spec.Containers)
	if len(containers) == 0 {
		say("no containers")
	}
	for _, c := range containers {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot)
		if !nonRoot {
			say("container %s: runAsNonRoot must be true", c.Name)
		}
		uid := sc.RunAsUser
		if uid == nil {
			uid = pod.RunAsUser
		}
		if uid != nil && *uid == 0 {
			say("container %s: runs as uid 0", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			say("container %s: readOnlyRootFilesystem must be true", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			say("container %s: allowPrivilegeEscalation must be false", c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			say("container %s: privileged", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			say("container %s: capabilities must drop ALL", c.Name)
		} else if len(sc.Capabilities.Add) > 0 {
			say("container %s: adds capabilities %v", c.Name, sc.Capabilities.Add)
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = pod.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			say("container %s: seccompProfile must be RuntimeDefault", c.Name)
		}
		tmpMounted := false
		for _, vm := range c.VolumeMounts {
			if vm.MountPath == "/tmp" && tmp[vm.Name] {
				tmpMounted = true
			}
		}
		if !tmpMounted {
			say("container %s: needs an emptyDir at /tmp (the root filesystem is read-only)", c.Name)
		}
		if len(c.Resources.Requests) == 0 {
			say("container %s: no resource requests", c.Name)
		}
	}
	return problems
}

func probeRules(p podTemplate) []string {
	var problems []string
	for _, c := range p.template.Spec.Containers {
		ports := map[string]bool{}
		for _, port := range c.Ports {
			ports[port.Name] = true
			ports[fmt.Sprint(port.ContainerPort)] = true
		}
		check := func(kind string, probe *corev1.Probe, path string) {
			switch {
			case probe == nil:
				problems = append(problems, fmt.Sprintf("%s: container %s: no %s probe", p.id, c.Name, kind))
			case probe.HTTPGet == nil:
				problems = append(problems, fmt.Sprintf("%s: container %s: the %s probe must be an HTTP GET of %s", p.id, c.Name, kind, path))
			case probe.HTTPGet.Path != path:
				problems = append(problems, fmt.Sprintf("%s: container %s: the %s probe gets %s, not the cheap %s", p.id, c.Name, kind, probe.HTTPGet.Path, path))
			case !ports[probe.HTTPGet.Port.String()]:
				problems = append(problems, fmt.Sprintf("%s: container %s: the %s probe's port %s is not declared", p.id, c.Name, kind, probe.HTTPGet.Port.String()))
			}
		}
		check("startup", c.StartupProbe, "/livez")
		check("liveness", c.LivenessProbe, "/livez")
		check("readiness", c.ReadinessProbe, "/readyz")
	}
	return problems
}

func podLabels(m *manifests) map[string]labels.Set {
	out := map[string]labels.Set{}
	for _, p := range m.pods() {
		out[p.id] = labels.Set(p.template.Labels)
	}
	return out
}

func matchesAny(selector labels.Selector, pods map[string]labels.Set) bool {
	for _, set := range pods {
		if selector.Matches(set) {
			return true
		}
	}
	return false
}

func referenceRules(m *manifests) []string {
	var problems []string
	pods := podLabels(m)
	deployments := map[string]*appsv1.Deployment{}
	for _, d := range m.deployments {
		deployments[d.Name] = d
		selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !selector.Matches(labels.Set(d.Spec.Template.Labels)) {
			problems = append(problems, fmt.Sprintf("Deployment %s: its selector does not match its pod labels", d.Name))
		}
	}
	services := map[string]*corev1.Service{}
	for _, s := range m.services {
		services[s.Name] = s
		selector := labels.SelectorFromSet(s.Spec.Selector)
		var targets []corev1.Container
		for _, d := range m.deployments {
			if selector.Matches(labels.Set(d.Spec.Template.Labels)) {
				targets = append(targets, d.Spec.Template.Spec.Containers...)
			}
		}
		if len(targets) == 0 {
			problems = append(problems, fmt.Sprintf("Service %s: selects no pods", s.Name))
			continue
		}
		for _, port := range s.Spec.Ports {
			found := false
			for _, c := range targets {
				for _, cp := range c.Ports {
					if cp.Name == port.TargetPort.String() || fmt.Sprint(cp.ContainerPort) == port.TargetPort.String() {
						found = true
					}
				}
			}
			if !found {
				problems = append(problems, fmt.Sprintf("Service %s: target port %s is no container port", s.Name, port.TargetPort.String()))
			}
		}
	}
	for _, h := range m.hpas {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || deployments[h.Spec.ScaleTargetRef.Name] == nil {
			problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler %s: no Deployment %s", h.Name, h.Spec.ScaleTargetRef.Name))
		} else if deployments[h.Spec.ScaleTargetRef.Name].Spec.Replicas != nil {
			problems = append(problems, fmt.Sprintf("Deployment %s: sets replicas although an HPA scales it", h.Spec.ScaleTargetRef.Name))
		}
	}
	for _, p := range m.pdbs {
		selector, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || !matchesAny(selector, pods) {
			problems = append(problems, fmt.Sprintf("PodDisruptionBudget %s: selects no pods", p.Name))
		}
	}
	for _, i := range m.ingresses {
		for _, rule := range i.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for _, path := range rule.HTTP.Paths {
				backend := path.Backend.Service
				if backend == nil || services[backend.Name] == nil {
					problems = append(problems, fmt.Sprintf("Ingress %s: no backend Service", i.Name))
					continue
				}
				found := false
				for _, port := range services[backend.Name].Spec.Ports {
					if port.Name == backend.Port.Name || (backend.Port.Number != 0 && port.Port == backend.Port.Number) {
						found = true
					}
				}
				if !found {
					problems = append(problems, fmt.Sprintf("Ingress %s: Service %s has no port %s", i.Name, backend.Name, backend.Port.Name))
				}
			}
		}
	}
	for _, sm := range m.serviceMonitors {
		selector, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			problems = append(problems, fmt.Sprintf("ServiceMonitor %s: %v", sm.Name, err))
			continue
		}
		selected := 0
		for _, s := range m.services {
			if !selector.Matches(labels.Set(s.Labels)) {
				continue
			}
			selected++
			for _, e := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
					problems = append(problems, fmt.Sprintf("ServiceMonitor %s: Service %s has no port %q", sm.Name, s.Name, e.Port))
				}
			}
		}
		if selected == 0 {
			problems = append(problems, fmt.Sprintf("ServiceMonitor %s: selects no Service", sm.Name))
		}
	}
	if len(m.policies) > 0 {
		for id, set := range pods {
			covered := false
			for _, np := range m.policies {
				selector, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
				if err == nil && selector.Matches(set) && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
					covered = true
				}
			}
			if !covered {
				problems = append(problems, fmt.Sprintf("%s: no NetworkPolicy limits its egress", id))
			}
		}
	}
	return problems
}

func args(t corev1.PodTemplateSpec) []string {
	if len(t.Spec.Containers) == 0 {
		return nil
	}
	return slices.Concat(t.Spec.Containers[0].Command, t.Spec.Containers[0].Args)
}

func roleRules(m *manifests, roles []string) []string {
	var problems []string
	found := map[string]bool{}
	for _, d := range m.deployments {
		a := args(d.Spec.Template)
		switch {
		case slices.Equal(a, []string{"serve", "--api-only"}):
			found["api"] = true
		case len(a) == 2 && a[0] == "worker":
			found[a[1]] = true
		default:
			problems = append(problems, fmt.Sprintf("Deployment %s: unexpected command %v", d.Name, a))
		}
	}
	for _, role := range append([]string{"api"}, roles...) {
		if !found[role] {
			problems = append(problems, fmt.Sprintf("no Deployment runs the %s role", role))
		}
	}
	migrates := false
	for _, j := range m.jobs {
		hooks := strings.Split(j.Annotations["helm.sh/hook"], ",")
		if slices.Equal(args(j.Spec.Template), []string{"migrate"}) && slices.Contains(hooks, "pre-install") && slices.Contains(hooks, "pre-upgrade") {
			migrates = true
		}
	}
	if !migrates {
		problems = append(problems, "no pre-install,pre-upgrade hook Job runs `migrate`")
	}
	return problems
}
