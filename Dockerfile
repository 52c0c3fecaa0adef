# The operator image: the Python package on a slim base, run as non-root.
# Build: docker build -t workspace-status-controller:dev .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
COPY controllers ./controllers
RUN pip install --no-cache-dir --prefix=/install '.[uvloop]'

FROM python:3.11-slim
COPY --from=build /install /usr/local
# No writes at run time: bytecode is compiled now, the root filesystem is read-only.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN python -m compileall -q /usr/local/lib/python3.11/site-packages/reconciler \
    /usr/local/lib/python3.11/site-packages/controllers
USER 65532:65532
ENTRYPOINT ["workspace-operator"]
