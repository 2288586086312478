# The rater worker image. Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RATER_DATA_DIR=/var/lib/rater \
    RATER_WEB_HOST=0.0.0.0

WORKDIR /opt/rater
COPY pyproject.toml README.md ./
COPY rater ./rater
COPY schemas ./schemas
COPY topics ./topics
RUN pip install . && useradd --system --home-dir /var/lib/rater --create-home rater

USER rater
VOLUME ["/var/lib/rater"]
EXPOSE 6066
ENTRYPOINT ["rater"]
CMD ["worker"]
