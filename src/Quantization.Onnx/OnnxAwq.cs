using System.Numerics.Tensors;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Activation-aware weight quantization (AWQ, Lin et al., 2024) for ONNX graphs: scales the input channels of
/// MatMul/Gemm weights by how large their activations are, so that rounding the weights (4-bit per group, typically)
/// loses less on the channels that matter, then clips each group of weights where that lowers the output error. The
/// result is a float model that computes the same as before up to the clipping; a weight quantizer then rounds it.
/// </summary>
/// <remarks>
/// <para>
/// Groups are found as <see cref="OnnxSmoothQuant"/> finds them: every float value X that MatMul/Gemm layers with constant
/// 2-D weights read as their first input, with all of those layers. Over the calibration data, a_j = mean |X_j| per channel
/// j of X's last axis (every token). For each α of <see cref="AwqOptions.AlphaGrid"/>, s_j = max(a_j^α, 1e-4), then
/// s /= sqrt(max s · min s) (with <see cref="AwqOptions.DuoScaling"/>, a_j^α / (w_j^(1−α) + 1e-4) instead, w_j the weights'
/// relative magnitude); the error is the mean over sampled tokens x, layers and output channels n of
/// (x·(Q(diag(s)·W)/s − W)[:, n])², with Q the weight scheme (per group along the input axis K, per output channel or per
/// tensor), and the least error wins (ties to the smaller α). X's producer takes 1/s and the weights' input rows take s,
/// as <see cref="ChannelScaleFolding"/> does for SmoothQuant (or a new Mul of X by 1/s, see <see cref="AwqOptions.ExplicitScales"/>).
/// </para>
/// <para>
/// Then, for each layer (per-group and per-channel schemes), each output channel's group of the scaled weight is clamped to
/// ±r·max|w| for the fraction r of <see cref="AwqOptions.ClipRatios"/> with the least squared error of that group's share of
/// the output, Σ_t (Σ_{k in group} x_tk/s_k · (Q(clamp(w))_k − w_k))², on an evenly strided subset of at most
/// <see cref="AwqOptions.ClipRows"/> sampled tokens. Query and key projections are not clipped unless
/// <see cref="AwqOptions.ClipQueryKey"/> is set. Clamped weights stay in float: the weight quantizer then finds the
/// same group ranges as the search did.
/// </para>
/// <para>
/// The groups are handled in graph order, each reading the weights as earlier groups left them (a layer that produces one
/// group's input and consumes another's takes both). Calibration memory is flat in the number of batches: a per-channel
/// sum per group and a sample of at most <see cref="AwqOptions.SearchRows"/> tokens.
/// </para>
/// </remarks>
public static class OnnxAwq
{
    /// <summary>The smallest mean|x|^α, as the reference implementation clamps it.</summary>
    private const double MinimumScale = 1e-4;

    /// <summary>Calibrates the groups' inputs through ONNX Runtime, searches the scales and clipping, and rewrites the float model in place.</summary>
    /// <param name="model">The float model.</param>
    /// <param name="calibrationData">Feeds for the model's inputs, one collection per run.</param>
    /// <param name="options">The rules; <see cref="AwqOptions.Scheme"/> must be set.</param>
    /// <param name="progress">Receives a report after each calibration run.</param>
    /// <param name="cancellationToken">Cancels calibration and the searches; the model is then unchanged.</param>
    /// <returns>A report per scaled group, and the groups skipped with their reason.</returns>
    /// <exception cref="ArgumentNullException">An argument other than <paramref name="progress"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    /// <exception cref="ArgumentException">A grid is empty, or the scheme is missing or not one the searches quantize with.</exception>
    /// <exception cref="InvalidOperationException">There are groups to scale but the calibration data produced no runs.</exception>
    /// <exception cref="InvalidDataException">A constant's stored data does not match its shape; the model is then unchanged.</exception>
    /// <exception cref="NonFiniteValueException">A group's input holds NaN or an infinity on the calibration data.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails on the model or a feed.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the model is unchanged.</exception>
    public static Task<OnnxAwqResult> ApplyAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        AwqOptions options,
        IProgress<CalibrationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibrationData);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        QuantizationScheme scheme = options.Scheme ?? throw new ArgumentException("AWQ needs AwqOptions.Scheme, the weight scheme its searches quantize with (OnnxWeightQuantizer takes it from its own options).", nameof(options));
        return ApplyAsync(model, calibrationData, options, _ => scheme, _ => true, options.Calibration, progress, cancellationToken);
    }

    /// <summary>Rewrites the model in place with validated options: <paramref name="schemeOf"/> gives each layer's weight scheme, <paramref name="selects"/> which layers may be scaled.</summary>
    internal static async Task<OnnxAwqResult> ApplyAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        AwqOptions options,
        Func<NodeProto, QuantizationScheme> schemeOf,
        Func<NodeProto, bool> selects,
        OnnxCalibrationOptions calibration,
        IProgress<CalibrationProgress>? progress,
        CancellationToken cancellationToken)
    {
        OnnxGraphEditor editor = new(model);
        (List<ChannelScaleGroup> groups, List<OnnxSkippedScaleGroup> skipped) = ChannelScaleFolding.Find(editor, n => options.SelectsName(n) && selects(n), options.OtherConsumers, options.ExplicitScales);
        if (groups.Count == 0)
        {
            return new OnnxAwqResult([], skipped);
        }

        ChannelMeans means = new();
        RowSampler sampler = new(options.SearchRows);
        using (OnnxCalibrator calibrator = new(model, groups.Select(g => g.Input), createObserver: null, calibration.SessionOptions, calibration.Logger, skipNonFloat: true, tap: new Tee(means, sampler)))
        {
            int runs = await calibrator.RunAsync(calibrationData, progress, cancellationToken).ConfigureAwait(false);
            if (runs == 0)
            {
                throw new InvalidOperationException("The calibration data produced no runs; AWQ needs at least one.");
            }
        }

        HashSet<NodeProto> queryKey = options.Clip && !options.ClipQueryKey ? QueryKeyProjections(editor) : new(ReferenceEqualityComparer.Instance);
        ChannelScaleFolding folding = new(editor);
        List<OnnxAwqGroup> reports = [];
        foreach (ChannelScaleGroup group in groups)
        {
            cancellationToken.ThrowIfCancellationRequested();
            string[] consumers = [.. group.Consumers.Select(n => n.Name)];
            if (means.Means(group.Input) is not double[] mean || sampler.Sample(group.Input) is not (float[] rows, int count) || count == 0)
            {
                skipped.Add(new OnnxSkippedScaleGroup(group.Input, group.Producer?.Name, consumers, "it is not a float tensor, or the calibration data gave it no values"));
                continue;
            }

            if (mean.Length != group.Channels)
            {
                skipped.Add(new OnnxSkippedScaleGroup(group.Input, group.Producer?.Name, consumers, FormattableString.Invariant($"its last axis has {mean.Length} channels on the calibration data, but the weights take {group.Channels}")));
                continue;
            }

            Layer[] layers = [.. group.Consumers.Select(n => new Layer(n, ByOutput(folding.Values(n, 1), group.Channels, n.GemmTransB()), group.Channels, schemeOf(n)))];
            if (layers.FirstOrDefault(l => !TensorPrimitives.IsFiniteAll<float>(l.Weight)) is Layer bad)
            {
                skipped.Add(new OnnxSkippedScaleGroup(group.Input, group.Producer?.Name, consumers, $"the weight of '{bad.Node.Name}' holds NaN or an infinity"));
                continue;
            }

            double[]? weightMean = options.DuoScaling ? WeightMeans(layers, group.Channels) : null;
            Dictionary<double, double> errors = [];
            (double alpha, float[] scales, double best) = (0, [], double.PositiveInfinity);
            foreach (double candidate in options.AlphaGrid.Distinct().Order())
            {
                cancellationToken.ThrowIfCancellationRequested();
                float[] candidateScales = Scales(mean, weightMean, candidate);
                double error = ScaleError(rows, count, layers, candidateScales);
                errors[candidate] = error;
                if (error < best)
                {
                    (best, alpha, scales) = (error, candidate, candidateScales);
                }
            }

            bool identity = scales.All(s => s == 1);
            string? inserted = identity ? null : folding.Fold(group, scales);
            Dictionary<string, double> ratios = new(StringComparer.Ordinal);
            Dictionary<string, string> unclipped = new(StringComparer.Ordinal);
            float[]? tokens = null;
            foreach (Layer layer in layers)
            {
                string? reason = !options.Clip ? "clipping is off"
                    : queryKey.Contains(layer.Node) ? "it projects an attention's queries or keys (see AwqOptions.ClipQueryKey)"
                    : layer.Scheme.Granularity.Kind == GranularityKind.PerTensor ? "its scheme is per tensor, whose range no group's clipping sets"
                    : null;
                if (reason is not null)
                {
                    unclipped[layer.Node.Name] = reason;
                    continue;
                }

                cancellationToken.ThrowIfCancellationRequested();
                tokens ??= Strided(rows, count, scales, options.ClipRows);
                ratios[layer.Node.Name] = ClipLayer(folding.Writable(layer.Node, 1), layer, tokens, options.ClipRatios);
            }

            bool explicitScale = group.Kind == OnnxScaleProducerKind.ExplicitScale;
            reports.Add(new OnnxAwqGroup(
                group.Input,
                identity ? null : explicitScale ? inserted : group.Producer?.Name,
                group.Kind,
                consumers,
                explicitScale ? null : inserted,
                alpha,
                errors,
                ratios,
                unclipped));
        }

        cancellationToken.ThrowIfCancellationRequested();
        folding.Commit();
        return new OnnxAwqResult(reports, skipped);
    }

    /// <summary>Whether the searches can quantize with the scheme: 8- or 4-bit, per tensor, per channel or per group.</summary>
    internal static bool IsSearchable(QuantizationScheme scheme) =>
        scheme.Granularity.Kind is GranularityKind.PerTensor or GranularityKind.PerChannel or GranularityKind.PerGroup && scheme.Type.GetBitWidth() is 4 or 8;

    /// <summary>The scheme <see cref="OnnxWeightQuantizer"/> quantizes a node's weight with, as the searches apply it: its MatMulNBits blocks along K when those are set.</summary>
    internal static QuantizationScheme WeightScheme(NodeProto node, OnnxWeightQuantizationOptions options)
    {
        QuantizationScheme scheme = options.NodeSchemes.TryGetValue(node.Name, out QuantizationScheme? own) ? own : options.Scheme;
        return options.MatMulNBits is MatMulNBitsOptions nbits ? scheme.WithGranularity(QuantizationGranularity.PerGroup(nbits.BlockSize, axis: 1)) : scheme;
    }

    /// <summary>s_j = max(a_j^α, 1e-4), or max(a_j^α / (w_j^(1−α) + 1e-4), 1e-4) with weight means, divided by sqrt(max s · min s); kept within float and positive.</summary>
    private static float[] Scales(double[] mean, double[]? weightMean, double alpha)
    {
        double[] raw = [.. mean.Select((a, j) => Math.Max(Math.Pow(a, alpha) / (weightMean is null ? 1 : Math.Pow(weightMean[j], 1 - alpha) + MinimumScale), MinimumScale))];
        double norm = Math.Sqrt(raw.Max() * raw.Min());
        return [.. raw.Select(s => (float)Math.Clamp(s / norm, float.Epsilon, float.MaxValue))];
    }

    /// <summary>w_j: the mean over the layers' output rows of |w_nj| relative to the largest |w| of its quantization group (the row's group along K, the row, or the tensor).</summary>
    private static double[] WeightMeans(Layer[] layers, int channels)
    {
        double[] sums = new double[channels];
        long rows = 0;
        foreach (Layer layer in layers)
        {
            int groupSize = layer.Scheme.Granularity.Kind == GranularityKind.PerGroup ? Math.Min(layer.Scheme.Granularity.GroupSize, channels) : channels;
            float tensorMax = layer.Scheme.Granularity.Kind == GranularityKind.PerTensor ? Math.Abs(TensorPrimitives.MaxMagnitude(layer.Weight)) : 0;
            for (int n = 0; n < layer.Outputs; n++)
            {
                for (int start = 0; start < channels; start += groupSize)
                {
                    ReadOnlySpan<float> group = layer.Weight.AsSpan((n * channels) + start, Math.Min(groupSize, channels - start));
                    double largest = (tensorMax > 0 ? tensorMax : Math.Abs(TensorPrimitives.MaxMagnitude(group))) + 1e-6;
                    for (int j = 0; j < group.Length; j++)
                    {
                        sums[start + j] += Math.Abs(group[j]) / largest;
                    }
                }
            }

            rows += layer.Outputs;
        }

        return [.. sums.Select(s => s / rows)];
    }

    /// <summary>The search's error for candidate scales: mean over tokens, layers and outputs of (x·(Q(W·s)/s − W)ᵀ)².</summary>
    private static double ScaleError(float[] x, int tokens, Layer[] layers, float[] scales)
    {
        double sum = 0;
        long elements = 0;
        int channels = scales.Length;
        foreach (Layer layer in layers)
        {
            float[] scaled = new float[layer.Weight.Length];
            for (int i = 0; i < scaled.Length; i++)
            {
                scaled[i] = (float)(layer.Weight[i] * (double)scales[i % channels]);
            }

            float[] restored = FakeQuantize(scaled, layer);
            for (int i = 0; i < restored.Length; i++)
            {
                restored[i] = (float)((restored[i] / (double)scales[i % channels]) - layer.Weight[i]);
            }

            sum += SquaredOutput(x, tokens, restored, channels, channels);
            elements += (long)tokens * layer.Outputs;
        }

        return sum / elements;
    }

    /// <summary>
    /// Σ over the first <paramref name="tokens"/> rows t of <paramref name="rows"/> ([tokens, K]), output rows n and groups of <paramref name="groupSize"/> inputs of (x_t[group]·delta_n[group])²,
    /// per (n, group) when <paramref name="perGroup"/> is given (it receives them, [N, groups]), summed otherwise.
    /// </summary>
    private static double SquaredOutput(float[] rows, int tokens, float[] delta, int channels, int groupSize, double[]? perGroup = null)
    {
        int outputs = delta.Length / channels, groups = (channels + groupSize - 1) / groupSize;
        double[] sums = perGroup ?? new double[outputs * groups];
        Parallel.For(0, outputs, n =>
        {
            ReadOnlySpan<float> d = delta.AsSpan(n * channels, channels);
            for (int g = 0; g < groups; g++)
            {
                int start = g * groupSize, length = Math.Min(groupSize, channels - start);
                ReadOnlySpan<float> dg = d.Slice(start, length);
                double s = 0;
                for (int t = 0; t < tokens; t++)
                {
                    double e = TensorPrimitives.Dot(rows.AsSpan((t * channels) + start, length), dg);
                    s += e * e;
                }

                sums[(n * groups) + g] = s;
            }
        });

        return sums.Sum();
    }

    /// <summary>Clamps each output row's groups of a scaled weight (in its stored layout) to the fraction of their largest |w| with the least error on the tokens; returns the mean fraction chosen.</summary>
    private static double ClipLayer(float[] stored, Layer layer, float[] tokens, IList<double> ratios)
    {
        int k = layer.Inputs, n = layer.Outputs;
        bool transposed = layer.Node.GemmTransB();
        float[] weight = transposed ? (float[])stored.Clone() : OnnxWeightQuantizer.Transpose(stored, k, n);
        int groupSize = layer.Scheme.Granularity.Kind == GranularityKind.PerGroup ? Math.Min(layer.Scheme.Granularity.GroupSize, k) : k;
        int groups = (k + groupSize - 1) / groupSize;
        float[] limits = new float[n * groups];
        for (int row = 0; row < n; row++)
        {
            for (int g = 0; g < groups; g++)
            {
                int start = g * groupSize;
                limits[(row * groups) + g] = Math.Abs(TensorPrimitives.MaxMagnitude(weight.AsSpan((row * k) + start, Math.Min(groupSize, k - start))));
            }
        }

        double[] bestError = [.. Enumerable.Repeat(double.PositiveInfinity, n * groups)], error = new double[n * groups];
        double[] bestRatio = new double[n * groups];
        float[] clamped = new float[weight.Length];
        foreach (double ratio in ratios)
        {
            Clamp(weight, limits, ratio, groupSize, groups, k, clamped);
            float[] delta = FakeQuantize(clamped, layer);
            for (int i = 0; i < delta.Length; i++)
            {
                delta[i] -= weight[i];
            }

            SquaredOutput(tokens, tokens.Length / k, delta, k, groupSize, error);
            for (int i = 0; i < error.Length; i++)
            {
                if (error[i] < bestError[i])
                {
                    (bestError[i], bestRatio[i]) = (error[i], ratio);
                }
            }
        }

        for (int i = 0; i < weight.Length; i++)
        {
            int cell = (i / k * groups) + (i % k / groupSize);
            float limit = (float)(limits[cell] * bestRatio[cell]);
            weight[i] = Math.Clamp(weight[i], -limit, limit);
        }

        (transposed ? weight : OnnxWeightQuantizer.Transpose(weight, n, k)).CopyTo(stored, 0);
        return bestRatio.Average();
    }

    /// <summary>Each weight clamped to ±ratio·(its group's largest |w|).</summary>
    private static void Clamp(float[] weight, float[] limits, double ratio, int groupSize, int groups, int k, float[] clamped)
    {
        for (int i = 0; i < weight.Length; i++)
        {
            float limit = (float)(limits[(i / k * groups) + (i % k / groupSize)] * ratio);
            clamped[i] = Math.Clamp(weight[i], -limit, limit);
        }
    }

    /// <summary>At most <paramref name="most"/> of the sampled tokens, evenly strided, divided by the scales (the scaled layer's input).</summary>
    private static float[] Strided(float[] rows, int count, float[] scales, int most)
    {
        int channels = scales.Length, taken = Math.Min(count, most), stride = count / taken;
        float[] tokens = new float[taken * channels];
        for (int t = 0; t < taken; t++)
        {
            for (int j = 0; j < channels; j++)
            {
                tokens[(t * channels) + j] = rows[(t * stride * channels) + j] / scales[j];
            }
        }

        return tokens;
    }

    /// <summary>A weight given as [N, K] rows quantized with the layer's scheme and restored: per group of K (a partial last group as ONNX Runtime's zero padding gives it), per row, or per tensor.</summary>
    private static float[] FakeQuantize(float[] rows, Layer layer)
    {
        QuantizationScheme scheme = layer.Scheme;
        string name = layer.Node.Input[1];
        return scheme.Granularity.Kind switch
        {
            GranularityKind.PerGroup => MatMulNBitsWriter.QuantizeBlocks(rows, layer.Outputs, layer.Inputs, scheme.Granularity.GroupSize, scheme, name).Dequantize(),
            GranularityKind.PerChannel => QuantizedTensor.Quantize(rows, [layer.Outputs, layer.Inputs], scheme.WithGranularity(QuantizationGranularity.PerChannel(0)), name).Dequantize(),
            _ => QuantizedTensor.Quantize(rows, [layer.Outputs, layer.Inputs], scheme, name).Dequantize(),
        };
    }

    /// <summary>A weight as [N, K] rows (output channel first; MatMul and Gemm store [K, N], Gemm with transB [N, K]).</summary>
    private static float[] ByOutput(float[] weight, int channels, bool transposed) =>
        transposed ? (float[])weight.Clone() : OnnxWeightQuantizer.Transpose(weight, channels, weight.Length / channels);

    /// <summary>
    /// The MatMul/Gemm layers with a constant weight whose output reaches, through reshapes and elementwise operators, an
    /// operand of a MatMul of two computed values whose result goes to a Softmax: an attention's query and key projections.
    /// </summary>
    private static HashSet<NodeProto> QueryKeyProjections(OnnxGraphEditor editor)
    {
        string[] passThrough = ["Add", "Sub", "Mul", "Div", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Cast", "Identity", "Slice", "Concat", "Neg", "Split"];
        string[] toSoftmax = ["Div", "Mul", "Add", "Sub", "Where", "Cast", "Reshape"];
        Dictionary<string, NodeProto> producers = new(StringComparer.Ordinal);
        Dictionary<string, List<NodeProto>> readers = new(StringComparer.Ordinal);
        foreach (NodeProto node in editor.Graph.Node)
        {
            foreach (string output in node.Output.Where(o => o.Length > 0))
            {
                producers[output] = node;
            }

            foreach (string input in node.Input.Where(i => i.Length > 0))
            {
                (readers.TryGetValue(input, out List<NodeProto>? list) ? list : readers[input] = []).Add(node);
            }
        }

        HashSet<NodeProto> projections = new(ReferenceEqualityComparer.Instance);
        foreach (NodeProto scores in editor.Graph.Node.Where(n => n.OpType == "MatMul" && n.IsDefaultDomain() && n.Input.Count == 2 && !n.Input.Any(editor.IsFloatConstant) && ReachesSoftmax(n.Output[0], 4)))
        {
            Stack<(string Value, int Depth)> pending = new(scores.Input.Select(i => (i, 0)));
            HashSet<string> seen = new(StringComparer.Ordinal);
            while (pending.TryPop(out (string Value, int Depth) item))
            {
                if (!seen.Add(item.Value) || !producers.TryGetValue(item.Value, out NodeProto? node) || !node.IsDefaultDomain())
                {
                    continue;
                }

                if (node.OpType is "MatMul" or "Gemm")
                {
                    if (node.Input.Count >= 2 && editor.ConstantShape(node.Input[1]) is { Count: 2 })
                    {
                        projections.Add(node);
                    }
                }
                else if (passThrough.Contains(node.OpType) && item.Depth < 10)
                {
                    foreach (string input in node.Input.Where(i => i.Length > 0 && !editor.IsFloatConstant(i)))
                    {
                        pending.Push((input, item.Depth + 1));
                    }
                }
            }
        }

        return projections;

        bool ReachesSoftmax(string value, int depth) =>
            readers.TryGetValue(value, out List<NodeProto>? next) && next.Any(n => n.IsDefaultDomain()
                && (n.OpType == "Softmax" || (depth > 0 && toSoftmax.Contains(n.OpType) && n.Output.Any(o => ReachesSoftmax(o, depth - 1)))));
    }

    /// <summary>One layer of a group: its node, its weight as [N, K] rows as the group found it, and its scheme.</summary>
    private sealed class Layer(NodeProto node, float[] weight, int inputs, QuantizationScheme scheme)
    {
        public NodeProto Node => node;

        public float[] Weight => weight;

        public int Inputs => inputs;

        public int Outputs => weight.Length / inputs;

        public QuantizationScheme Scheme => scheme;
    }

    /// <summary>The running sum of |x| per channel of the last axis of each tensor it sees, and its row count; refuses non-finite values.</summary>
    private sealed class ChannelMeans : IActivationRecorder
    {
        private readonly Dictionary<string, (double[] Sums, long Rows)> _tensors = new(StringComparer.Ordinal);

        public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
        {
            int channels = shape.IsEmpty ? 1 : shape[^1];
            if (channels == 0)
            {
                return;
            }

            int bad = TensorPrimitives.IsFiniteAll(values) ? -1 : FirstNonFinite(values);
            if (bad >= 0)
            {
                throw new NonFiniteValueException(name, bad, values[bad], nameof(values));
            }

            (double[] sums, long rows) = _tensors.TryGetValue(name, out (double[] Sums, long Rows) entry) ? entry : (new double[channels], 0);
            if (sums.Length != channels)
            {
                throw new ArgumentException(FormattableString.Invariant($"Tensor '{name}' has {channels} channels, not {sums.Length} as before."), nameof(shape));
            }

            for (int start = 0; start < values.Length; start += channels)
            {
                ReadOnlySpan<float> row = values.Slice(start, channels);
                for (int j = 0; j < channels; j++)
                {
                    sums[j] += Math.Abs(row[j]);
                }
            }

            _tensors[name] = (sums, rows + (values.Length / channels));
        }

        /// <summary>mean |x_j| per channel, or <see langword="null"/> when the tensor was not seen.</summary>
        public double[]? Means(string name) =>
            _tensors.TryGetValue(name, out (double[] Sums, long Rows) entry) && entry.Rows > 0 ? [.. entry.Sums.Select(s => s / entry.Rows)] : null;

        private static int FirstNonFinite(ReadOnlySpan<float> values)
        {
            for (int i = 0; i < values.Length; i++)
            {
                if (!float.IsFinite(values[i]))
                {
                    return i;
                }
            }

            return -1;
        }
    }
}
