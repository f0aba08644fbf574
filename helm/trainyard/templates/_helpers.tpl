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

{{- define "trainyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "trainyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "trainyard.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
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

{{/* Secrets. */}}
{{- define "trainyard.rayTokenSecret" -}}
{{- default (printf "%s-ray-auth" (include "trainyard.fullname" . | trunc 54 | trimSuffix "-")) .Values.ray.auth.existingSecret -}}
{{- end -}}

{{- define "trainyard.databaseSecret" -}}
{{- if .Values.store.postgresql.enabled -}}
{{- include "trainyard.postgresqlName" . -}}
{{- else -}}
{{- required "store.external.existingSecret: name the Secret that holds the database URL, or set store.postgresql.enabled=true" .Values.store.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "trainyard.databaseSecretKey" -}}
{{- if .Values.store.postgresql.enabled -}}url{{- else -}}{{ .Values.store.external.key }}{{- end -}}
{{- end -}}

{{/*
What every Trainyard container (API, Ray head, Ray workers) gets: the ConfigMap of TRAINYARD_* settings, the
S3 credentials Secret when one is named, and the database URL from its Secret. Values stay in Secrets; the
pod spec only names them.
*/}}
{{- define "trainyard.envFrom" -}}
- configMapRef:
    name: {{ include "trainyard.fullname" . }}
{{- with .Values.s3.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{- define "trainyard.databaseEnv" -}}
- name: TRAINYARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "trainyard.databaseSecret" . }}
      key: {{ include "trainyard.databaseSecretKey" . }}
{{- end -}}

{{- define "trainyard.publicUrl" -}}
{{- if .Values.config.publicUrl -}}
{{- .Values.config.publicUrl -}}
{{- else if .Values.api.ingress.enabled -}}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.api.ingress.tlsSecretName "")) .Values.api.ingress.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v" (include "trainyard.apiName" .) .Release.Namespace .Values.api.service.port -}}
{{- end -}}
{{- end -}}

{{/* The scrape annotations Prometheus's kubernetes_sd examples follow. */}}
{{- define "trainyard.scrapeAnnotations" -}}
{{- if .root.Values.monitoring.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* The Ray container's settings, volumes and mounts, shared by the head and every worker group. */}}
{{- define "trainyard.rayContainerEnv" -}}
envFrom:
  {{- include "trainyard.envFrom" . | nindent 2 }}
env:
  {{- include "trainyard.databaseEnv" . | nindent 2 }}
  {{- /* Serve's proxy binds every interface of the head; the API reaches it through the head Service. */}}
  - name: TRAINYARD_SERVE_BIND_HOST
    value: 0.0.0.0
volumeMounts:
  - name: ray-logs
    mountPath: /tmp/ray
  - name: home
    mountPath: /var/lib/trainyard
  - name: dshm
    mountPath: /dev/shm
{{- end -}}
{{- define "trainyard.rayVolumes" -}}
volumes:
  {{- /* Ray writes logs under /tmp/ray; the dataset cache lives under the home folder, one per node. */}}
  - name: ray-logs
    emptyDir: {}
  - name: home
    emptyDir: {}
  {{- /* PyTorch data loaders and NCCL share tensors through /dev/shm; the container default is 64 MiB. */}}
  - name: dshm
    emptyDir:
      medium: Memory
{{- end -}}
