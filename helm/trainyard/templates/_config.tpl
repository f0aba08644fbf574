{{/*
The settings Ray pods read (job drivers, Ray Train workers, Serve replicas). Their checksum sits on the Ray pod
templates, so changing one rebuilds the Ray cluster: nothing here may depend on an API-only value.
*/}}
{{- define "trainyard.rayConfigData" -}}
TRAINYARD_HOME: /var/lib/trainyard
TRAINYARD_ARTIFACT_URI: {{ .Values.config.artifactUri | quote }}
{{- with .Values.config.s3EndpointUrl }}
TRAINYARD_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
TRAINYARD_S3_REGION: {{ .Values.config.s3Region | quote }}
AWS_DEFAULT_REGION: {{ .Values.config.s3Region | quote }}
TRAINYARD_RAY_ADDRESS: {{ printf "http://%s:8265" (include "trainyard.rayHeadService" .) | quote }}
TRAINYARD_SERVE_URL: {{ printf "http://%s:%v" (include "trainyard.rayHeadService" .) .Values.serving.port | quote }}
{{- /* An autoscaling cluster grows to fit a job; a fixed one fails jobs it can never fit, at once. */}}
TRAINYARD_FIXED_CLUSTER: {{ (not .Values.ray.autoscaling.enabled) | toString | quote }}
TRAINYARD_NODE_TYPES: {{ include "trainyard.nodeTypes" . | quote }}
TRAINYARD_RATES_AS_OF: {{ .Values.config.ratesAsOf | quote }}
TRAINYARD_SERVE_REPLICA_CPUS: {{ .Values.serving.replicaCpus | toString | quote }}
TRAINYARD_SERVE_REPLICA_GPUS: {{ .Values.serving.replicaGpus | toString | quote }}
TRAINYARD_SERVE_MIN_REPLICAS: {{ .Values.serving.minReplicas | toString | quote }}
TRAINYARD_SERVE_MAX_REPLICAS: {{ .Values.serving.maxReplicas | toString | quote }}
{{- with .Values.serving.resource }}
TRAINYARD_SERVE_RESOURCE: {{ include "trainyard.serveResource" $ | quote }}
{{- end }}
TRAINYARD_MAX_IMAGE_BYTES: {{ .Values.config.maxImageBytes | int64 | toString | quote }}
RAY_USAGE_STATS_ENABLED: "0"
PYTHONUNBUFFERED: "1"
{{- range $name, $value := .Values.config.extraEnv }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* What only the API reads: changing it rolls the API pods, never the Ray cluster. */}}
{{- define "trainyard.apiConfigData" -}}
TRAINYARD_PUBLIC_URL: {{ include "trainyard.publicUrl" . | quote }}
{{- range $name, $value := .Values.api.extraEnv }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The worker groups that run (enabled), keyed by group name. */}}
{{- define "trainyard.enabledGroups" -}}
{{- $enabled := dict -}}
{{- range $name, $group := .Values.ray.workerGroups -}}
{{- if $group.enabled }}{{ $_ := set $enabled $name $group }}{{ end -}}
{{- end -}}
{{- toJson $enabled -}}
{{- end -}}

{{/*
TRAINYARD_NODE_TYPES (`core/settings.py` NodeType), rendered from the groups themselves so that prices are keyed
by the names a job's work sees: KubeRay sets RAY_NODE_TYPE_NAME to the group name (`headgroup` for the head).
Resources are what Ray sees (whole CPUs, or `num-cpus` where rayStartParams set it; GPUs; custom resources);
max_workers what the autoscaler may start.
*/}}
{{- define "trainyard.nodeTypes" -}}
{{- $types := dict -}}
{{- $head := .Values.ray.head -}}
{{- $_ := set $types "headgroup" (dict "resources" (dict "CPU" (float64 (index $head.rayStartParams "num-cpus" | default 0))) "usd_per_hour" (float64 $head.pricing.onDemandUsdPerHour) "capacity_type" "on-demand" "max_workers" 0) -}}
{{- range $name, $group := include "trainyard.enabledGroups" . | fromJson -}}
{{- $resources := dict "CPU" (float64 (index (default dict $group.rayStartParams) "num-cpus" | default $group.resources.cpu)) -}}
{{- if $group.gpus }}{{ $_ := set $resources "GPU" (float64 $group.gpus) }}{{ end -}}
{{- range $resource, $amount := $group.customResources }}{{ $_ := set $resources $resource (float64 $amount) }}{{ end -}}
{{- $count := ternary $group.maxReplicas $group.replicas $.Values.ray.autoscaling.enabled -}}
{{- $type := dict "resources" $resources "usd_per_hour" (float64 $group.pricing.onDemandUsdPerHour) "capacity_type" $group.capacityType "max_workers" (int $count) -}}
{{- with $group.pricing.spotUsdPerHour }}{{ $_ := set $type "spot_usd_per_hour" (float64 .) }}{{ end -}}
{{- $_ := set $types $name $type -}}
{{- end -}}
{{- toJson $types -}}
{{- end -}}

{{/* The Serve resource, checked against the groups: a resource no running group offers would strand replicas. */}}
{{- define "trainyard.serveResource" -}}
{{- $resource := .Values.serving.resource -}}
{{- $offered := false -}}
{{- range $name, $group := include "trainyard.enabledGroups" . | fromJson -}}
{{- if hasKey (default dict $group.customResources) $resource }}{{ $offered = true }}{{ end -}}
{{- end -}}
{{- if not $offered -}}
{{- fail (printf "serving.resource: no enabled worker group offers %q, so Serve replicas could never be placed; enable ray.workerGroups.serving (or add %q to a group's customResources), or set serving.resource to \"\" to let replicas run on any node" $resource $resource) -}}
{{- end -}}
{{- $resource -}}
{{- end -}}
