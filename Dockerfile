# threadteam: slim, non-root, the `threadteam` entry point. Runs live in the state volume
# (the default SQLite store) unless THREADTEAM_STORE names a Redis.
#   docker build -t threadteam .
#   docker run --env-file .env -p 3000:3000 -v threadteam-state:/home/threadteam/state \
#     threadteam run slack
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY teams ./teams
COPY adapters ./adapters
# A venv without pip: the image carries what threadteam runs on and nothing to install with.
# Tracing exports over OTLP/HTTP only (what bot/telemetry.py uses), so no gRPC wheels.
RUN python -m venv --without-pip /opt/threadteam \
 && pip --python /opt/threadteam/bin/python install . \
      "opentelemetry-exporter-otlp-proto-http>=1.25" \
 && find /opt/threadteam -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/threadteam/bin/python -m compileall -q -j 0 /opt/threadteam/lib

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/threadteam /opt/threadteam
RUN useradd --create-home --uid 10001 threadteam \
 && install -d -o threadteam -g threadteam /home/threadteam/state
USER threadteam
WORKDIR /home/threadteam
ENV PATH=/opt/threadteam/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PORT=3000 \
    THREADTEAM_STORE=sqlite:////home/threadteam/state/threadteam.sqlite3
VOLUME ["/home/threadteam/state"]
EXPOSE 3000
# Healthy when /healthz answers, in Slack HTTP mode (the port from --port, else PORT).
# Socket Mode and Discord serve no HTTP: there a running process is all there is to check.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-c", "\
import os, sys, urllib.request\n\
args = open('/proc/1/cmdline', 'rb').read().decode().split('\\0')\n\
if 'slack' not in args or os.environ.get('SLACK_APP_TOKEN'): sys.exit(0)\n\
port = args[args.index('--port') + 1] if '--port' in args[:-1] else os.environ.get('PORT') or '3000'\n\
urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)\n\
"]
ENTRYPOINT ["threadteam"]
CMD ["--help"]
