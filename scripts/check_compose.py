"""Check docker-compose.yml where no Docker CLI can: it parses, and the services of the
distributed layout exist with what they need."""

import sys

import yaml

REQUIRED = {"postgres", "redis", "web", "worker", "beat"}


def main(path: str) -> int:
    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services") or {}
    problems = [f"missing service: {name}" for name in sorted(REQUIRED - set(services))]
    for name in ("web", "worker", "beat"):
        service = services.get(name) or {}
        env = service.get("environment") or {}
        keys = set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}
        for needed in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
            if needed not in keys and "<<" not in service:
                problems.append(f"{name}: no {needed}")
    beat = services.get("beat") or {}
    if (beat.get("deploy") or {}).get("replicas", 1) != 1:
        problems.append("beat must run exactly once")
    for name in ("postgres", "redis"):
        if "healthcheck" not in (services.get(name) or {}):
            problems.append(f"{name}: no healthcheck")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{path}: services {', '.join(sorted(services))} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"))
