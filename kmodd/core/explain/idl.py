"""The Varlink types of `kmodd.core.explain.model`'s wire form (`to_json`), for a service that
returns explanations: on its own so that the daemon's interface text does not import the
explanation machinery at start-up."""

VARLINK_TYPES = """\
type ExplainEvidence (
  label: string,
  text: string,
  path: ?string,
  line: ?int,
  offset: ?int
)

type ExplainFinding (
  check: string,
  verdict: string,
  summary: string,
  module: ?string,
  evidence: []ExplainEvidence,
  fix: ?string
)

type Explanation (
  target: string,
  kernel_release: string,
  moddir: string,
  modules: []string,
  verdict: string,
  findings: []ExplainFinding
)
"""
