# threadteam: slim, non-root, the `threadteam` entry point.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY teams ./teams
COPY adapters ./adapters
RUN pip install --no-cache-dir --prefix=/install ".[otlp]"

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 10001 threadteam
USER threadteam
WORKDIR /home/threadteam
ENV PYTHONUNBUFFERED=1 \
    THREADTEAM_STORE=sqlite:////home/threadteam/state/threadteam.sqlite3
EXPOSE 3000
ENTRYPOINT ["threadteam"]
CMD ["--help"]
