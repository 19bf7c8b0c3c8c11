// Command dockerfile-lint checks a Dockerfile with BuildKit's own Dockerfile frontend: the
// parser, the dispatcher and every lint rule `docker build --check` applies, with each rule's
// warning an error here (no container engine needed). Base images are not pulled: their
// configuration is stood in by a minimal Linux image of this machine's platform.
//
// Then it asserts the image rules of fhirbots on the final stage: a numeric non-root USER, a
// HEALTHCHECK, an exec-form ENTRYPOINT and CMD.
//
//	dockerfile-lint deploy/docker/Dockerfile
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	digest "github.com/opencontainers/go-digest"
)

// offlineImages answers every base image lookup with a minimal image config, so that linting
// needs no registry.
type offlineImages struct{}

func (offlineImages) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
	})
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(config), config, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerfile-lint DOCKERFILE")
		os.Exit(2)
	}
	path := os.Args[1]
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	problems := lint(path, data)
	problems = append(problems, imageRules(data)...)
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "%s: %s\n", path, p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("%s: BuildKit lint rules and image rules pass\n", path)
}

// lint runs BuildKit's checks over every stage and returns each warning and error.
func lint(path string, data []byte) []string {
	sourceMap := llb.NewSourceMap(nil, path, "Dockerfile", data)
	sourceMap.Definition = &llb.Definition{}
	results, err := dockerfile2llb.DockerfileLint(context.Background(), data, dockerfile2llb.ConvertOpt{
		Config:       dockerui.Config{},
		SourceMap:    sourceMap,
		MetaResolver: offlineImages{},
	})
	if err != nil {
		return []string{"lint: " + err.Error()}
	}
	var problems []string
	for _, w := range results.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		problems = append(problems, fmt.Sprintf("line %d: %s: %s (%s)", line, w.RuleName, w.Detail, w.URL))
	}
	if results.Error != nil {
		problems = append(problems, "build error: "+results.Error.Message)
	}
	return problems
}

// imageRules checks the final stage: who it runs as, how it is probed and started.
func imageRules(data []byte) []string {
	ast, err := parser.Parse(strings.NewReader(string(data)))
	if err != nil {
		return []string{"parse: " + err.Error()}
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return []string{"parse: " + err.Error()}
	}
	if len(stages) < 2 {
		return []string{"expected a multi-stage build (a builder and a runtime stage)"}
	}
	args := map[string]string{}
	for _, meta := range metaArgs {
		for _, kv := range meta.Args {
			if kv.Value != nil {
				args[kv.Key] = *kv.Value
			}
		}
	}
	final := stages[len(stages)-1]
	var user string
	var healthcheck, entrypoint, cmd bool
	for _, command := range final.Commands {
		switch c := command.(type) {
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				if kv.Value != nil {
					args[kv.Key] = *kv.Value
				}
			}
		case *instructions.UserCommand:
			user = os.Expand(c.User, func(name string) string { return args[name] })
		case *instructions.HealthCheckCommand:
			healthcheck = c.Health != nil && len(c.Health.Test) > 0 && c.Health.Test[0] != "NONE"
		case *instructions.EntrypointCommand:
			entrypoint = !c.PrependShell && len(c.CmdLine) > 0
		case *instructions.CmdCommand:
			cmd = !c.PrependShell && len(c.CmdLine) > 0
		}
	}
	var problems []string
	uid := strings.SplitN(user, ":", 2)[0]
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		problems = append(problems, fmt.Sprintf("final stage: USER must be a numeric non-root uid (so runAsNonRoot can verify it), not %q", user))
	}
	if !healthcheck {
		problems = append(problems, "final stage: no HEALTHCHECK")
	}
	if !entrypoint {
		problems = append(problems, "final stage: no exec-form ENTRYPOINT")
	}
	if !cmd {
		problems = append(problems, "final stage: no exec-form CMD")
	}
	return problems
}
