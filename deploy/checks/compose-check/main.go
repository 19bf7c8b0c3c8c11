// Command compose-check loads compose files as `docker compose config` does (compose-go: the
// Compose Specification's JSON schema, interpolation with the files' defaults, consistency of
// services, volumes and networks), then asserts the rules of fhirbots' compose files:
//
//   - every service has a healthcheck, or is a one-shot (restart "no") that the services
//     depending on it wait for with condition service_completed_successfully;
//
//   - every depends_on names a condition: service_healthy on a service with a healthcheck, or
//     service_completed_successfully on a one-shot (never the bare "started");
//
//   - no Bitnami image; Kafka from the official apache/kafka image;
//
//   - every fhirbots container has a read-only root filesystem, a tmpfs /tmp, a writable data
//     dir and a stop grace period;
//
//   - with -roles: a `migrate` one-shot that every other fhirbots service waits for, the API
//     (`serve --api-only`) and one `worker ROLE` service per role, each with a management port;
//
//   - with -embedded: a single service running `serve`.
//
//     compose-check -roles relay,matcher,dispatcher,bots,stats deploy/compose/compose.yaml
//     compose-check -embedded deploy/compose/compose.embedded.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const dataDir = "/var/lib/fhirbots"

func main() {
	roles := flag.String("roles", "", "comma-separated worker roles that must each have a service")
	embedded := flag.Bool("embedded", false, "the one-service embedded compose file")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-roles R1,R2,...|-embedded] COMPOSE_FILE")
		os.Exit(2)
	}
	path := flag.Arg(0)
	project, err := load(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
		os.Exit(1)
	}
	problems := commonRules(project)
	if *roles != "" {
		problems = append(problems, distributedRules(project, strings.Split(*roles, ","))...)
	}
	if *embedded {
		problems = append(problems, embeddedRules(project)...)
	}
	sort.Strings(problems)
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "%s: %s\n", path, p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("%s: valid (compose schema), %d services, fhirbots rules pass\n", path, len(project.Services))
}

// load reads one compose file with an empty environment, so the files' own defaults apply.
func load(path string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	options, err := cli.NewProjectOptions(
		[]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithEnv([]string{}),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	return options.LoadProject(context.Background())
}

func isFhirbots(s types.ServiceConfig) bool {
	return strings.Contains(s.Image, "fhirbots")
}

func hasHealthcheck(s types.ServiceConfig) bool {
	h := s.HealthCheck
	return h != nil && !h.Disable && len(h.Test) > 0 && h.Test[0] != "NONE"
}

func isOneShot(s types.ServiceConfig) bool {
	return s.Restart == types.RestartPolicyNo
}

func commonRules(p *types.Project) []string {
	var problems []string
	for name, s := range p.Services {
		image := strings.ToLower(s.Image)
		if strings.Contains(image, "bitnami") {
			problems = append(problems, fmt.Sprintf("service %s: Bitnami image %s", name, s.Image))
		}
		if strings.Contains(image, "kafka") && !strings.HasPrefix(image, "apache/kafka:") {
			problems = append(problems, fmt.Sprintf("service %s: Kafka must come from the official apache/kafka image, not %s", name, s.Image))
		}
		if !hasHealthcheck(s) && !isOneShot(s) {
			problems = append(problems, fmt.Sprintf("service %s: no healthcheck, and not a one-shot (restart: \"no\")", name))
		}
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				problems = append(problems, fmt.Sprintf("service %s: depends on unknown service %s", name, dep))
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if !hasHealthcheck(target) {
					problems = append(problems, fmt.Sprintf("service %s: waits for %s to be healthy, which has no healthcheck", name, dep))
				}
			case types.ServiceConditionCompletedSuccessfully:
				if !isOneShot(target) {
					problems = append(problems, fmt.Sprintf("service %s: waits for %s to complete, which is not a one-shot", name, dep))
				}
			default:
				problems = append(problems, fmt.Sprintf("service %s: depends_on %s with condition %q: use service_healthy or service_completed_successfully", name, dep, d.Condition))
			}
		}
		for dep, target := range p.Services {
			if isOneShot(target) {
				if d, ok := s.DependsOn[dep]; ok && d.Condition != types.ServiceConditionCompletedSuccessfully {
					problems = append(problems, fmt.Sprintf("service %s: must wait for the one-shot %s with service_completed_successfully", name, dep))
				}
			}
		}
		if isFhirbots(s) {
			problems = append(problems, containerRules(name, s)...)
		}
	}
	return problems
}

// containerRules: a fhirbots container runs with a read-only root filesystem and may write
// only to /tmp and its data dir.
func containerRules(name string, s types.ServiceConfig) []string {
	var problems []string
	if !s.ReadOnly {
		problems = append(problems, fmt.Sprintf("service %s: read_only must be true", name))
	}
	tmpfs := map[string]bool{}
	for _, t := range s.Tmpfs {
		tmpfs[strings.SplitN(t, ":", 2)[0]] = true
	}
	if !tmpfs["/tmp"] {
		problems = append(problems, fmt.Sprintf("service %s: needs a tmpfs at /tmp", name))
	}
	dataWritable := tmpfs[dataDir]
	for _, v := range s.Volumes {
		if v.Target == dataDir && !v.ReadOnly {
			dataWritable = true
		}
	}
	if !dataWritable {
		problems = append(problems, fmt.Sprintf("service %s: %s must be a volume or a tmpfs (the image's data dir)", name, dataDir))
	}
	if !isOneShot(s) && s.StopGracePeriod == nil {
		problems = append(problems, fmt.Sprintf("service %s: set stop_grace_period above FHIRBOTS_SHUTDOWN_GRACE_SECONDS", name))
	}
	return problems
}

func command(s types.ServiceConfig) string {
	return strings.Join(s.Command, " ")
}

func distributedRules(p *types.Project, roles []string) []string {
	var problems []string
	var migrate string
	for name, s := range p.Services {
		if isFhirbots(s) && command(s) == "migrate" {
			migrate = name
			if !isOneShot(s) {
				problems = append(problems, fmt.Sprintf("service %s: the migration must be a one-shot (restart: \"no\")", name))
			}
		}
	}
	if migrate == "" {
		problems = append(problems, "no fhirbots service runs `migrate`")
	}
	found := map[string]bool{}
	for name, s := range p.Services {
		if !isFhirbots(s) || name == migrate {
			continue
		}
		if migrate != "" {
			if d, ok := s.DependsOn[migrate]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				problems = append(problems, fmt.Sprintf("service %s: must wait for %s (service_completed_successfully)", name, migrate))
			}
		}
		args := s.Command
		switch {
		case len(args) == 2 && args[0] == "worker":
			found["worker "+args[1]] = true
			if port := s.Environment["FHIRBOTS_MANAGEMENT_PORT"]; port == nil || *port == "" {
				problems = append(problems, fmt.Sprintf("service %s: a worker needs FHIRBOTS_MANAGEMENT_PORT (its /readyz and /metrics)", name))
			}
		case slices.Equal(args, []string{"serve", "--api-only"}):
			found["api"] = true
		default:
			problems = append(problems, fmt.Sprintf("service %s: unexpected command %q", name, command(s)))
		}
		for _, variable := range []string{"FHIRBOTS_DATABASE_URL", "FHIRBOTS_KAFKA"} {
			if v := s.Environment[variable]; v == nil || *v == "" {
				problems = append(problems, fmt.Sprintf("service %s: %s is not set", name, variable))
			}
		}
	}
	if !found["api"] {
		problems = append(problems, "no service runs the API (`serve --api-only`)")
	}
	for _, role := range roles {
		if !found["worker "+role] {
			problems = append(problems, fmt.Sprintf("no service runs `worker %s`", role))
		}
	}
	return problems
}

func embeddedRules(p *types.Project) []string {
	if len(p.Services) != 1 {
		return []string{fmt.Sprintf("the embedded compose file has one service, not %d", len(p.Services))}
	}
	for name, s := range p.Services {
		if !isFhirbots(s) || command(s) != "serve" {
			return []string{fmt.Sprintf("service %s: must run the fhirbots image's `serve`", name)}
		}
		for _, v := range s.Volumes {
			if v.Target == dataDir && v.Type == types.VolumeTypeVolume {
				return nil
			}
		}
		return []string{fmt.Sprintf("service %s: its data dir %s must be a named volume", name, dataDir)}
	}
	return nil
}
