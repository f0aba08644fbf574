{{/*
Names. Kubernetes limits most names to 63 characters (DNS labels), so every name is cut there.
*/}}
{{- define "trainyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "trainyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The RayCluster's name. KubeRay appends "-head-svc" and pod suffixes to it, so it is cut to 40 characters.
KubeRay also names the autoscaler's Role and the generated token Secret after it.
*/}}
{{- define "trainyard.rayClusterName" -}}
{{- printf "%s-ray" (include "trainyard.fullname" . | trunc 36 | trimSuffix "-") -}}
{{- end -}}

{{/* The head Service KubeRay creates for the RayCluster. */}}
{{- define "trainyard.rayHeadService" -}}
{{- printf "%s-head-svc" (include "trainyard.rayClusterName" .) -}}
{{- end -}}

{{- define "trainyard.apiName" -}}
{{- printf "%s-api" (include "trainyard.fullname" . | trunc 59 | trimSuffix "-") -}}
{{- end -}}

{{- define "trainyard.postgresqlName" -}}
{{- printf "%s-postgresql" (include "trainyard.fullname" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}

{{/* The two ConfigMaps: what Ray pods read (their checksum rebuilds the cluster), and what only the API reads. */}}
{{- define "trainyard.rayConfigName" -}}
{{- printf "%s-ray-config" (include "trainyard.fullname" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}

{{- define "trainyard.apiConfigName" -}}
{{- include "trainyard.apiName" . -}}
{{- end -}}

{{/* ServiceAccounts: one per role. `role` is api, head or worker. */}}
{{- define "trainyard.serviceAccountName" -}}
{{- $account := index .root.Values.serviceAccounts .role -}}
{{- $suffix := dict "api" "api" "head" "ray-head" "worker" "ray-worker" -}}
{{- $default := printf "%s-%s" (include "trainyard.fullname" .root | trunc 52 | trimSuffix "-") (index $suffix .role) -}}
{{- if .root.Values.serviceAccounts.create -}}
{{- default $default $account.name -}}
{{- else -}}
{{- required (printf "serviceAccounts.%s.name: name an existing ServiceAccount, or set serviceAccounts.create=true" .role) $account.name -}}
{{- end -}}
{{- end -}}

{{- define "trainyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels. */}}
{{- define "trainyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trainyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trainyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "trainyard.apiSelectorLabels" -}}
{{ include "trainyard.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end -}}

{{/* Secrets. Without ray.auth.existingSecret, KubeRay makes the token Secret itself, named after the cluster. */}}
{{- define "trainyard.rayTokenSecret" -}}
{{- default (include "trainyard.rayClusterName" .) .Values.ray.auth.existingSecret -}}
{{- end -}}

{{- define "trainyard.databaseSecret" -}}
{{- if .Values.store.postgresql.enabled -}}
{{- default (include "trainyard.postgresqlName" .) .Values.store.postgresql.existingSecret -}}
{{- else -}}
{{- required "store.external.existingSecret: name the Secret that holds the database URL, or set store.postgresql.enabled=true" .Values.store.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{/*
What every Trainyard container gets: the ConfigMap(s) of settings, the S3 credentials Secret when one is named.
`api` adds the API's own ConfigMap after the shared one, so an API setting overrides a shared one.
*/}}
{{- define "trainyard.envFrom" -}}
- configMapRef:
    name: {{ include "trainyard.rayConfigName" .root }}
{{- if .api }}
- configMapRef:
    name: {{ include "trainyard.apiConfigName" .root }}
{{- end }}
{{- with .root.Values.s3.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{/*
The store URL. External: read whole from its Secret. In-release PostgreSQL: a URL without a password, and the
password in PGPASSWORD, which libpq (under psycopg) reads when the URL has none: the URL holds no secret.
*/}}
{{- define "trainyard.databaseEnv" -}}
{{- if .Values.store.postgresql.enabled -}}
{{- $pg := .Values.store.postgresql -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "trainyard.databaseSecret" . }}
      key: password
- name: TRAINYARD_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s@%s:5432/%s" $pg.username (include "trainyard.postgresqlName" .) $pg.database | quote }}
{{- else -}}
- name: TRAINYARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "trainyard.databaseSecret" . }}
      key: {{ .Values.store.external.key }}
{{- end -}}
{{- end -}}

{{- define "trainyard.publicUrl" -}}
{{- if .Values.api.publicUrl -}}
{{- .Values.api.publicUrl -}}
{{- else if .Values.api.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.api.ingress.tlsSecretName "")) .Values.api.ingress.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v" (include "trainyard.apiName" .) .Release.Namespace .Values.api.service.port -}}
{{- end -}}
{{- end -}}

{{/* The scrape annotations Prometheus's kubernetes_sd examples follow. */}}
{{- define "trainyard.scrapeAnnotations" -}}
{{- if .root.Values.monitoring.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* Annotations that keep node consolidation (Karpenter, the Cluster Autoscaler) from moving a Ray pod. */}}
{{- define "trainyard.doNotDisrupt" -}}
{{- if .Values.ray.disruption.doNotDisrupt -}}
karpenter.sh/do-not-disrupt: "true"
cluster-autoscaler.kubernetes.io/safe-to-evict: "false"
{{- end -}}
{{- end -}}

{{/* The node selector of a Ray group: its own labels plus the capacity type its price assumes. */}}
{{- define "trainyard.rayNodeSelector" -}}
{{- $selector := deepCopy (default dict .nodeSelector) -}}
{{- $label := .root.Values.ray.capacityTypeLabel -}}
{{- if $label.key -}}
{{- $_ := set $selector $label.key (ternary $label.spot $label.onDemand (eq .capacityType "spot")) -}}
{{- end -}}
{{- with $selector -}}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* Security contexts (values `podSecurityContext`, `containerSecurityContext`). */}}
{{- define "trainyard.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}
{{- define "trainyard.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/*
The Ray container's settings and mounts, shared by the head and every worker group. HOME is the home emptyDir
(the image's home is on the read-only root): torch, matplotlib and Ray keep caches there.
*/}}
{{- define "trainyard.rayContainerEnv" -}}
envFrom:
  {{- include "trainyard.envFrom" (dict "root" .) | nindent 2 }}
env:
  {{- include "trainyard.databaseEnv" . | nindent 2 }}
  {{- /* Serve's proxy binds every interface of the head; the API reaches it through the head Service. */}}
  - name: TRAINYARD_SERVE_BIND_HOST
    value: 0.0.0.0
volumeMounts:
  - {name: tmp, mountPath: /tmp}
  - {name: ray-logs, mountPath: /tmp/ray}
  - {name: home, mountPath: /var/lib/trainyard}
  - {name: dshm, mountPath: /dev/shm}
{{- end -}}

{{/*
`memory` is the container's memory: /dev/shm counts against it, and Ray's object store lives there. `scratch`
is a group's own size limits, each falling back to ray.scratch.
*/}}
{{- define "trainyard.rayVolumes" -}}
{{- $scratch := merge (deepCopy (default dict .scratch)) .root.Values.ray.scratch -}}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: {{ .root.Values.tmpSizeLimit }}}
  - name: ray-logs
    emptyDir: {sizeLimit: {{ $scratch.rayTemp }}}
  - name: home
    emptyDir: {sizeLimit: {{ $scratch.home }}}
  {{- /* PyTorch data loaders and NCCL share tensors through /dev/shm; the container default is 64 MiB. */}}
  - name: dshm
    emptyDir: {medium: Memory, sizeLimit: {{ .memory }}}
{{- end -}}
