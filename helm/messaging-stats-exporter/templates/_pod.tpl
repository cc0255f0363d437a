{{- /*
The pod template of the exporter, shared by the Deployment (one replica) and
the StatefulSet (sharding.replicas > 1): "template:" and below, indented for
a workload's spec. In sharded mode each pod takes its shard index from its
StatefulSet ordinal (the hostname's trailing -N) and the count from
sharding.replicas.
*/}}
{{- define "messaging-stats-exporter.podTemplate" }}
{{- $fullname := include "messaging-stats-exporter.fullname" . }}
{{- $hasSecrets := or .Values.secrets .Values.existingSecret }}
  template:
    metadata:
      labels:
        {{- include "messaging-stats-exporter.labels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or (not .Values.autoReloadInterval) .Values.secrets .Values.podAnnotations }}
      annotations:
        {{- if not .Values.autoReloadInterval }}
        checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
        {{- end }}
        {{- if .Values.secrets }}
        checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "messaging-stats-exporter.serviceAccountName" . }}
      automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with .Values.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      containers:
        - name: exporter
          image: {{ include "messaging-stats-exporter.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            {{- if .Values.demo }}
            - --demo
            {{- else }}
            - --config
            - /etc/messaging-stats-exporter/config/config.yaml
            {{- with .Values.autoReloadInterval }}
            - --config.auto-reload-interval
            - {{ . | quote }}
            {{- end }}
            {{- end }}
            - --web.listen-address
            - {{ printf "0.0.0.0:%v" .Values.containerPort | quote }}
            {{- if eq (include "messaging-stats-exporter.sharded" .) "true" }}
            - --shard-from-hostname
            - --shard-count
            - {{ include "messaging-stats-exporter.shardCount" . | quote }}
            {{- end }}
            {{- range .Values.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          {{- with .Values.env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.envFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ .Values.containerPort }}
              protocol: TCP
          {{- with .Values.livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.readinessProbe }}
          readinessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .Values.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: config
              mountPath: /etc/messaging-stats-exporter/config
              readOnly: true
            {{- range $index, $name := .Values.targetFiles.configMaps }}
            - name: {{ printf "target-files-configmap-%d" $index }}
              mountPath: {{ printf "%s/configmap-%s" (trimSuffix "/" $.Values.targetFiles.mountPath) $name }}
              readOnly: true
            {{- end }}
            {{- range $index, $name := .Values.targetFiles.secrets }}
            - name: {{ printf "target-files-secret-%d" $index }}
              mountPath: {{ printf "%s/secret-%s" (trimSuffix "/" $.Values.targetFiles.mountPath) $name }}
              readOnly: true
            {{- end }}
            {{- if $hasSecrets }}
            - name: secrets
              mountPath: {{ .Values.secretsMountPath }}
              readOnly: true
            {{- end }}
            - name: tmp
              mountPath: /tmp
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $fullname }}
        {{- range $index, $name := .Values.targetFiles.configMaps }}
        - name: {{ printf "target-files-configmap-%d" $index }}
          configMap:
            name: {{ $name }}
        {{- end }}
        {{- range $index, $name := .Values.targetFiles.secrets }}
        - name: {{ printf "target-files-secret-%d" $index }}
          secret:
            secretName: {{ $name }}
            defaultMode: 0444
        {{- end }}
        {{- if $hasSecrets }}
        - name: secrets
          projected:
            defaultMode: 0444
            sources:
              {{- if .Values.existingSecret }}
              - secret:
                  name: {{ .Values.existingSecret }}
              {{- end }}
              {{- if .Values.secrets }}
              - secret:
                  name: {{ $fullname }}
              {{- end }}
        {{- end }}
        - name: tmp
          emptyDir:
            medium: Memory
            {{- with .Values.tmpSizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
