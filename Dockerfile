# The rater worker image. Build context: the repository root.
#
# Stage 1 installs the rater and compiles its rating core with mypyc (needs a C compiler,
# so it starts from the full python image); stage 2 is the slim runtime. The compiled
# core is used only if its manifest matches the installed sources (rater/_compiled.py).
FROM python:3.11 AS build

ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rater ./rater
COPY schemas ./schemas
COPY topics ./topics
COPY tools/compile_core.py ./tools/compile_core.py
RUN pip install --prefix=/install . \
 && pip install "mypy>=1.13" "setuptools>=70" \
 && python tools/compile_core.py --out /install/lib/rater-compiled

FROM python:3.11-slim

# PYTHONDONTWRITEBYTECODE: nothing is written outside RATER_DATA_DIR (and /tmp), so the
# root filesystem can be read-only (deploy/k8s/ runs it so).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RATER_DATA_DIR=/var/lib/rater \
    RATER_WEB_HOST=0.0.0.0 \
    RATER_COMPILED_DIR=/usr/local/lib/rater-compiled

COPY --from=build /install /usr/local
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only check a numeric USER, and
# fsGroup 10001 makes a fresh volume writable for it (deploy/k8s/statefulset.yaml).
RUN groupadd --system --gid 10001 rater \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/rater --create-home rater \
 && python -c "import rater, sys; print(rater.CORE_BUILD); sys.exit(not rater.CORE_BUILD.startswith('compiled'))"

USER 10001:10001
VOLUME ["/var/lib/rater"]
EXPOSE 6066
ENTRYPOINT ["rater"]
CMD ["worker"]
