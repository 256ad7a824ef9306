# The smallest image that serves an exported bundle: distilbench's base install (the runtime: onnxruntime, tokenizers,
# numpy, pandas, fastapi, uvicorn; no torch, no transformers), the bundle, and `distilbench serve`.
#
#   distilbench export --model runs/news/models/minilm-l6/best --out bundle     # in the full install
#   docker build --build-arg BUNDLE=bundle -t news-classifier .
#   docker run --rm -p 8000:8000 news-classifier
#   curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"texts": ["Bank shares rise"]}'
#
# BUNDLE is a folder inside this build context (.dockerignore lets in bundle/ and bundles/ besides the package's
# sources). docs/guides/deployment.md has the details.

FROM python:3.11-slim AS build
# EXTRAS=openvino adds OpenVINO, for a bundle exported as openvino-bf16 or openvino-int8 (--build-arg EXTRAS=openvino)
ARG EXTRAS=
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# the base install (and EXTRAS): everything lands in /install, copied alone into the final image
RUN pip install --no-cache-dir --prefix=/install ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
ARG BUNDLE=bundle
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false
COPY --from=build /install /usr/local
COPY ${BUNDLE} /model
# a bundle with a missing or damaged file fails the build here (its manifest's checksums), not the first request
RUN useradd --create-home --uid 10001 distilbench \
    && python -c "import distilbench; distilbench.load('/model').predict(['a first text'])"
USER distilbench
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
# --threads: intra-op threads of the model (the container's CPUs by default); see `distilbench serve --help`
CMD ["distilbench", "serve", "--model", "/model", "--host", "0.0.0.0", "--port", "8000"]
