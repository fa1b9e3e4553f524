using System.Numerics.Tensors;

using Microsoft.ML.OnnxRuntime;

namespace Quantization.Onnx;

/// <summary>
/// SmoothQuant (Xiao et al., 2023) for ONNX graphs: moves the outlier channels of the inputs of MatMul/Gemm layers into
/// their weights, so that per-tensor int8 activations lose less. The float model computes the same, up to rounding.
/// </summary>
/// <remarks>
/// <para>
/// Every float value X that MatMul/Gemm layers with constant 2-D weights read as their first input forms a group with all
/// of those layers (Q, K and V share one). Over the calibration data, a_j = max |X_j| per channel j of X's last axis (every
/// token); w_j = max over the group's weights of |W[j, :]| (the input row j). Then s_j = max(a_j^α / w_j^(1−α), 1e-5),
/// and s_j = 1 where a_j = 0 or w_j = 0. X's producer takes 1/s and the weights' input rows take s, as
/// <see cref="OnnxScaleProducerKind"/> lists; groups whose producer cannot take it exactly are skipped with the reason,
/// or, with <see cref="OnnxSmoothQuantOptions.ExplicitScales"/>, get a new Mul of X by 1/s that feeds only their layers.
/// Scales are computed from the model as it is, and all groups are folded together at the end.
/// </para>
/// <para>
/// With <see cref="OnnxSmoothQuantOptions.SearchAlpha"/>, each group takes the α of the grid with the least error
/// E(α) = mean over sampled tokens r, layers and output channels n of (Q_x(x_r / s)·Q_w(diag(s)·W)[:, n] − x_r·W[:, n])²,
/// where Q_x quantizes per tensor with the activation scheme over the calibrated range of X / s (min_j min X_j / s_j to
/// max_j max X_j / s_j, what a MinMax calibration of the smoothed model sees) and Q_w is symmetric int8 per output channel
/// (the static quantizer's default); ties go to the smaller α. With <see cref="OnnxSmoothQuantOptions.DynamicActivations"/>
/// (and always under <see cref="OnnxDynamicQuantizer.QuantizeAsync"/>), Q_x instead quantizes the sampled rows per tensor
/// over their own range (min and max of all sampled x_r / s), as dynamic quantization does with each tensor at run time. The tokens are a uniform sample of all calibration tokens
/// (reservoir sampling with a fixed seed), at most <see cref="OnnxSmoothQuantOptions.SearchRows"/> per group.
/// </para>
/// <para>Calibration memory is flat in the number of batches: a per-channel minimum and maximum per group, and the sample.</para>
/// </remarks>
public static class OnnxSmoothQuant
{
    /// <summary>The smallest scale, as the reference implementation clamps it.</summary>
    private const double MinimumScale = 1e-5;

    /// <summary>Calibrates the groups' inputs through ONNX Runtime and smooths the model in place.</summary>
    /// <param name="model">The float model.</param>
    /// <param name="calibrationData">Feeds for the model's inputs, one collection per run.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <param name="progress">Receives a report after each calibration run.</param>
    /// <param name="cancellationToken">Cancels calibration and the search; the model is then unchanged.</param>
    /// <returns>A report per smoothed group, and the groups skipped with their reason.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="calibrationData"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    /// <exception cref="ArgumentException">The options are inconsistent (see <see cref="OnnxSmoothQuantOptions"/>).</exception>
    /// <exception cref="InvalidOperationException">There are groups to smooth but the calibration data produced no runs.</exception>
    /// <exception cref="InvalidDataException">A constant's stored data does not match its shape; the model is then unchanged.</exception>
    /// <exception cref="NonFiniteValueException">A group's input holds NaN or an infinity on the calibration data.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails on the model or a feed.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the model is unchanged.</exception>
    public static Task<OnnxSmoothQuantResult> SmoothAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        OnnxSmoothQuantOptions? options = null,
        IProgress<CalibrationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibrationData);
        options ??= new OnnxSmoothQuantOptions();
        options.Validate();
        return SmoothAsync(model, calibrationData, options, options.DynamicActivations, QuantizationScheme.Int8PerChannel(), progress, cancellationToken);
    }

    /// <summary>
    /// Smooths the model in place with validated options; the search measures dynamic activations when
    /// <paramref name="dynamicActivations"/> is set, whatever the options say, and rounds the weights with
    /// <paramref name="weightScheme"/> (the quantizer's, per output channel when per channel).
    /// </summary>
    internal static async Task<OnnxSmoothQuantResult> SmoothAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        OnnxSmoothQuantOptions options,
        bool dynamicActivations,
        QuantizationScheme weightScheme,
        IProgress<CalibrationProgress>? progress,
        CancellationToken cancellationToken)
    {
        OnnxGraphEditor editor = new(model);
        (List<ChannelScaleGroup> groups, List<OnnxSkippedScaleGroup> skipped) = ChannelScaleFolding.Find(editor, options.SelectsName, options.OtherConsumers, options.ExplicitScales);
        if (groups.Count == 0)
        {
            return new OnnxSmoothQuantResult([], skipped);
        }

        RowSampler? sampler = options.SearchAlpha ? new RowSampler(options.SearchRows) : null;
        IReadOnlyDictionary<string, IQuantizationObserver> observers;
        using (OnnxCalibrator calibrator = new(model, groups.Select(g => g.Input), _ => new MinMaxObserver(QuantizationScheme.Int8PerChannel(-1)), options.Calibration.SessionOptions, options.Calibration.Logger, skipNonFloat: true, tap: sampler))
        {
            int runs = await calibrator.RunAsync(calibrationData, progress, cancellationToken).ConfigureAwait(false);
            if (runs == 0)
            {
                throw new InvalidOperationException("The calibration data produced no runs; SmoothQuant needs at least one.");
            }

            observers = calibrator.Observers;
        }

        ChannelScaleFolding folding = new(editor);
        List<(ChannelScaleGroup Group, float[] Scales)> folds = [];
        List<OnnxSmoothQuantGroup> reports = [];
        foreach (ChannelScaleGroup group in groups)
        {
            cancellationToken.ThrowIfCancellationRequested();
            string[] consumers = [.. group.Consumers.Select(n => n.Name)];
            if (!observers.TryGetValue(group.Input, out IQuantizationObserver? observer) || observer is not MinMaxObserver range || range.ObservedCount == 0)
            {
                skipped.Add(new OnnxSkippedScaleGroup(group.Input, group.Producer?.Name, consumers, "it is not a float tensor, or the calibration data gave it no values"));
                continue;
            }

            if (range.ParameterShape[0] != group.Channels)
            {
                skipped.Add(new OnnxSkippedScaleGroup(group.Input, group.Producer?.Name, consumers, FormattableString.Invariant($"its last axis has {range.ParameterShape[0]} channels on the calibration data, but the weights take {group.Channels}")));
                continue;
            }

            float[][] weights = [.. group.Consumers.Select(n => RowsByInput(folding.Values(n, 1), group.Channels, n.GemmTransB()))];
            double[] activation = [.. Enumerable.Range(0, group.Channels).Select(j => (double)Math.Max(-range.Minimums[j], range.Maximums[j]))];
            double[] weight = new double[group.Channels];
            foreach (float[] w in weights)
            {
                int outputs = w.Length / group.Channels;
                for (int j = 0; j < group.Channels; j++)
                {
                    weight[j] = Math.Max(weight[j], Math.Abs(TensorPrimitives.MaxMagnitude(w.AsSpan(j * outputs, outputs))));
                }
            }

            if (Array.FindIndex(weight, w => !double.IsFinite(w)) is int bad and >= 0)
            {
                skipped.Add(new OnnxSkippedScaleGroup(group.Input, group.Producer?.Name, consumers, FormattableString.Invariant($"a weight holds NaN or an infinity in input row {bad}")));
                continue;
            }

            double alpha = options.Alpha;
            Dictionary<double, double>? errors = null;
            if (sampler?.Sample(group.Input) is (float[] rows, int count) && count > 0)
            {
                Search search = new(rows, count, group.Channels, weights, dynamicActivations ? null : (range.Minimums.ToArray(), range.Maximums.ToArray()), options.ActivationScheme, weightScheme);
                errors = [];
                double best = double.PositiveInfinity;
                foreach (double candidate in options.AlphaGrid.Distinct().Order())
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    double error = search.Error(Scales(activation, weight, candidate));
                    errors[candidate] = error;
                    if (error < best)
                    {
                        (best, alpha) = (error, candidate);
                    }
                }
            }

            float[] scales = Scales(activation, weight, alpha);
            folds.Add((group, scales));
            reports.Add(new OnnxSmoothQuantGroup(
                group.Input,
                group.Producer?.Name ?? group.Input,
                group.Kind,
                [.. group.ProducerNodes.Select(n => n.Name)],
                consumers,
                null,
                alpha,
                (float)activation.Max(),
                (float)activation.Select((a, j) => a / scales[j]).Max(),
                (float)weight.Max(),
                (float)weight.Select((w, j) => w * scales[j]).Max(),
                errors));
        }

        cancellationToken.ThrowIfCancellationRequested();
        for (int g = 0; g < folds.Count; g++)
        {
            string? inserted = folding.Fold(folds[g].Group, folds[g].Scales);
            reports[g] = folds[g].Group.Kind == OnnxScaleProducerKind.ExplicitScale
                ? reports[g] with { Producer = inserted!, ProducerNodes = [inserted!] }
                : reports[g] with { RestoreNode = inserted };
        }

        if (folds.Count > 0)
        {
            folding.Commit();
        }

        return new OnnxSmoothQuantResult(reports, skipped);
    }

    /// <summary>s_j = max(a_j^α / w_j^(1−α), 1e-5), or 1 where a_j or w_j is 0; kept within float.</summary>
    private static float[] Scales(double[] activation, double[] weight, double alpha)
    {
        float[] scales = new float[activation.Length];
        for (int j = 0; j < scales.Length; j++)
        {
            scales[j] = activation[j] == 0 || weight[j] == 0
                ? 1
                : (float)Math.Min(Math.Max(Math.Pow(activation[j], alpha) / Math.Pow(weight[j], 1 - alpha), MinimumScale), float.MaxValue);
        }

        return scales;
    }

    /// <summary>A layer's weight as [C, N], input rows first (a Gemm with transB stores [N, C]).</summary>
    private static float[] RowsByInput(float[] weight, int channels, bool transposed)
    {
        if (!transposed)
        {
            return (float[])weight.Clone();
        }

        int outputs = weight.Length / channels;
        float[] rows = new float[weight.Length];
        for (int n = 0; n < outputs; n++)
        {
            for (int j = 0; j < channels; j++)
            {
                rows[(j * outputs) + n] = weight[(n * channels) + j];
            }
        }

        return rows;
    }

    /// <summary>The error of a group's layers for candidate scales, on the sampled tokens (see <see cref="OnnxSmoothQuant"/>).</summary>
    private sealed class Search
    {
        private const int RowBlock = 16;
        private readonly float[] _rows;
        private readonly int _count;
        private readonly int _channels;
        private readonly float[][] _weights;
        private readonly float[][] _references;
        private readonly (float[] Minimums, float[] Maximums)? _calibrated;
        private readonly QuantizationScheme _scheme;
        private readonly QuantizationScheme _weightScheme;

        /// <param name="rows">The sampled tokens of the group's input X, row-major [<paramref name="count"/>, <paramref name="channels"/>].</param>
        /// <param name="count">The number of sampled tokens.</param>
        /// <param name="channels">The number of input channels.</param>
        /// <param name="weights">Each layer's weight as input rows, [<paramref name="channels"/>, outputs].</param>
        /// <param name="calibrated">The calibrated per-channel range of X, for static activations; <see langword="null"/> for dynamic ones (each quantized over the range of the sampled rows).</param>
        /// <param name="scheme">The activations' quantization scheme.</param>
        /// <param name="weightScheme">The weights' quantization scheme.</param>
        public Search(float[] rows, int count, int channels, float[][] weights, (float[] Minimums, float[] Maximums)? calibrated, QuantizationScheme scheme, QuantizationScheme weightScheme)
        {
            (_rows, _count, _channels, _weights, _calibrated, _scheme) = (rows, count, channels, weights, calibrated, scheme);
            _weightScheme = weightScheme.Granularity.Kind == GranularityKind.PerChannel ? weightScheme.WithGranularity(QuantizationGranularity.PerChannel(1)) : weightScheme;
            _references = [.. weights.Select(w => Multiply(_rows.AsSpan(0, count * channels), Transpose(w, channels)))];
        }

        public double Error(float[] scales)
        {
            // The activations: X / s, quantized per tensor over the calibrated range of X / s (static), or over the range of the sampled X / s (dynamic).
            float[] smoothed = new float[_count * _channels];
            for (int i = 0; i < smoothed.Length; i++)
            {
                smoothed[i] = _rows[i] / scales[i % _channels];
            }

            float low = float.PositiveInfinity, high = float.NegativeInfinity;
            if (_calibrated is (float[] minimums, float[] maximums))
            {
                for (int j = 0; j < _channels; j++)
                {
                    low = Math.Min(low, minimums[j] / scales[j]);
                    high = Math.Max(high, maximums[j] / scales[j]);
                }
            }
            else
            {
                (low, high) = (TensorPrimitives.Min(smoothed), TensorPrimitives.Max(smoothed));
            }

            MinMaxObserver observer = new(_scheme);
            observer.Observe([low, high], [2]);

            float[] inputs = QuantizedTensor.Quantize(smoothed, [_count, _channels], _scheme, observer.ComputeParameters()).Dequantize();
            double sum = 0;
            long elements = 0;
            for (int l = 0; l < _weights.Length; l++)
            {
                float[] weight = (float[])_weights[l].Clone();
                int outputs = weight.Length / _channels;
                for (int i = 0; i < weight.Length; i++)
                {
                    weight[i] *= scales[i / outputs];
                }

                float[] restored = QuantizedTensor.Quantize(weight, [_channels, outputs], _weightScheme).Dequantize();
                float[] output = Multiply(inputs, Transpose(restored, _channels));
                float[] reference = _references[l];
                for (int i = 0; i < output.Length; i++)
                {
                    double d = output[i] - (double)reference[i];
                    sum += d * d;
                }

                elements += output.Length;
            }

            return sum / elements;
        }

        /// <summary>[C, N] to [N, C].</summary>
        private static float[] Transpose(float[] rows, int channels)
        {
            int outputs = rows.Length / channels;
            float[] columns = new float[rows.Length];
            for (int j = 0; j < channels; j++)
            {
                for (int n = 0; n < outputs; n++)
                {
                    columns[(n * channels) + j] = rows[(j * outputs) + n];
                }
            }

            return columns;
        }

        /// <summary>X [R, C] times W given as [N, C]: [R, N], in blocks of rows so that each weight column is read once per block.</summary>
        private float[] Multiply(ReadOnlySpan<float> x, float[] columns)
        {
            int rows = x.Length / _channels, outputs = columns.Length / _channels;
            float[] result = new float[rows * outputs];
            for (int start = 0; start < rows; start += RowBlock)
            {
                int end = Math.Min(rows, start + RowBlock);
                for (int n = 0; n < outputs; n++)
                {
                    ReadOnlySpan<float> column = columns.AsSpan(n * _channels, _channels);
                    for (int r = start; r < end; r++)
                    {
                        result[(r * outputs) + n] = TensorPrimitives.Dot(x.Slice(r * _channels, _channels), column);
                    }
                }
            }

            return result;
        }
    }
}
