using System.Runtime.InteropServices;

using Google.Protobuf;

using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Static full quantization (W8A8) of an ONNX model in the QDQ format: activations get a QuantizeLinear/DequantizeLinear
/// pair with scales from calibration, weights become int8 per channel with a DequantizeLinear (as in
/// <see cref="OnnxWeightQuantizer"/>), and the biases of Conv, ConvTranspose and Gemm become int32 with scale
/// input scale × weight scale, so that ONNX Runtime's CPU provider can fuse each pattern into an integer kernel.
/// </summary>
/// <remarks>
/// A bias is quantized with scale s_x·s_w, which is tiny when the input's range is: a bias of 1 with s_x = 1e-6 and
/// s_w = 1e-4 needs 10^10, past int32 (peers have shipped that overflow). Where a bias would pass
/// ±2^30 (half the int32 range, leaving headroom for the accumulator), the channel's weight scale is raised until it
/// fits; <see cref="OnnxStaticQuantizationResult.RaisedWeightScales"/> counts such channels.
/// </remarks>
public static class OnnxStaticQuantizer
{
    /// <summary>The largest magnitude of a quantized bias.</summary>
    private const double BiasLimit = 1 << 30;

    /// <summary>Calibrates the model's activations through ONNX Runtime and quantizes it in place (smoothing it first when <see cref="OnnxStaticQuantizationOptions.SmoothQuant"/> is set, and choosing float layers when <see cref="OnnxStaticQuantizationOptions.MixedPrecision"/> is).</summary>
    /// <param name="model">The float model; it must import opset 13 or later.</param>
    /// <param name="calibrationData">Feeds for the model's inputs, one collection per run.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <param name="progress">Receives a report after each calibration run.</param>
    /// <param name="cancellationToken">Cancels calibration; the model is then unchanged.</param>
    /// <returns>What was quantized.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="calibrationData"/> is <see langword="null"/>.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 13, or a scheme is not supported.</exception>
    /// <exception cref="InvalidOperationException">The calibration data produced no runs (SmoothQuant and mixed precision read the source again: it must give the same batches each time it is read).</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails on the model or a feed.</exception>
    public static async Task<OnnxStaticQuantizationResult> QuantizeAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        OnnxStaticQuantizationOptions? options = null,
        IProgress<CalibrationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibrationData);
        options ??= new OnnxStaticQuantizationOptions();
        Validate(model, options);
        if (options.SmoothQuant is null)
        {
            return await CalibrateAndQuantizeAsync(model, calibrationData, options, progress, cancellationToken).ConfigureAwait(false);
        }

        // Smoothing and quantization work on a copy, so that a failure or cancellation in either leaves the model as it was.
        // The smoothing search rounds the weights as this quantizer will.
        options.SmoothQuant.Validate();
        OnnxModel working = model.Clone();
        OnnxSmoothQuantResult smoothed = await OnnxSmoothQuant.SmoothAsync(working, calibrationData, options.SmoothQuant, options.SmoothQuant.DynamicActivations, options.Scheme, progress, cancellationToken).ConfigureAwait(false);
        OnnxStaticQuantizationResult result = await CalibrateAndQuantizeAsync(working, calibrationData, options, progress, cancellationToken).ConfigureAwait(false);
        model.Proto.Graph = working.Proto.Graph;
        return result with { SmoothQuant = smoothed };
    }

    private static async Task<OnnxStaticQuantizationResult> CalibrateAndQuantizeAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        OnnxStaticQuantizationOptions options,
        IProgress<CalibrationProgress>? progress,
        CancellationToken cancellationToken)
    {
        IReadOnlyDictionary<string, QuantizationParameters> parameters;
        BiasCorrection? correction = OnnxWeightQuantizer.TrackLayerInputs(model, options).Correction;
        string[] tensors = [.. ActivationCandidates(model, options).Union(correction?.TensorNames ?? [], StringComparer.Ordinal)];
        using (OnnxCalibrator calibrator = new(model, tensors, name => options.CreateObserver(options.ActivationScheme), options.Calibration.SessionOptions, options.Calibration.Logger, skipNonFloat: true, tap: correction))
        {
            int runs = await calibrator.RunAsync(calibrationData, progress, cancellationToken).ConfigureAwait(false);
            if (runs == 0)
            {
                throw new InvalidOperationException("The calibration data produced no runs; static quantization needs at least one.");
            }

            parameters = calibrator.ComputeParameters();
        }

        if (options.MixedPrecision is not OnnxMixedPrecisionOptions mixed)
        {
            return Quantize(model, parameters, options, correction, keepFloat: null);
        }

        MixedPrecisionSearch.Layer[] layers = [.. Sites(model.Proto.Graph, options)
            .Where(s => s.Inputs.Any(parameters.ContainsKey))
            .Select(s => new MixedPrecisionSearch.Layer(ActivationSites.LayerName(s.Node), s.Node.OpType, s.Inputs))];
        OnnxMixedPrecisionResult search = await MixedPrecisionSearch.RunAsync(
            model,
            layers,
            keep =>
            {
                OnnxModel candidate = model.Clone();
                Quantize(candidate, parameters, options, correction, keep);
                return candidate.Proto.ToByteArray();
            },
            calibrationData,
            mixed,
            options.Calibration.SessionOptions,
            options.Calibration.Logger,
            cancellationToken).ConfigureAwait(false);
        return Quantize(model, parameters, options, correction, new HashSet<string>(search.KeptInFloat, StringComparer.Ordinal)) with { MixedPrecision = search };
    }

    /// <summary>Quantizes the model in place with activation parameters computed beforehand (by <see cref="OnnxCalibrator"/> or any other means).</summary>
    /// <param name="model">The float model; it must import opset 13 or later.</param>
    /// <param name="activations">Per-tensor parameters by activation name; activations without an entry stay in float.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <returns>What was quantized.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="activations"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">An activation's parameters are not a single positive scale and a zero point of the activation type.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 13, a scheme is not supported, or <see cref="OnnxStaticQuantizationOptions.MixedPrecision"/> or <see cref="OnnxStaticQuantizationOptions.SmoothQuant"/> is set (they need calibration data).</exception>
    public static OnnxStaticQuantizationResult Quantize(OnnxModel model, IReadOnlyDictionary<string, QuantizationParameters> activations, OnnxStaticQuantizationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(activations);
        options ??= new OnnxStaticQuantizationOptions();
        Validate(model, options);
        if (options.MixedPrecision is not null || options.SmoothQuant is not null)
        {
            throw new NotSupportedException("Mixed precision and SmoothQuant measure the model on calibration data; quantize with QuantizeAsync, or set MixedPrecision and SmoothQuant to null.");
        }

        return Quantize(model, activations, options, correction: null, keepFloat: null);
    }

    /// <summary>Quantizes the model in place; the layers named in <paramref name="keepFloat"/> (<see cref="ActivationSites.LayerName"/>) keep float activations.</summary>
    private static OnnxStaticQuantizationResult Quantize(OnnxModel model, IReadOnlyDictionary<string, QuantizationParameters> activations, OnnxStaticQuantizationOptions options, BiasCorrection? correction, IReadOnlySet<string>? keepFloat)
    {
        OnnxGraphEditor editor = new(model);
        IReadOnlyList<(NodeProto Node, IReadOnlyList<string> Inputs)> sites = [.. Sites(editor.Graph, options).Where(s => keepFloat?.Contains(ActivationSites.LayerName(s.Node)) != true)];
        Dictionary<string, ScaleAndZeroPoint> used = new(StringComparer.Ordinal);
        foreach (string name in sites.SelectMany(s => s.Inputs).Distinct(StringComparer.Ordinal))
        {
            if (activations.TryGetValue(name, out QuantizationParameters? p))
            {
                (int low, int high) = options.ActivationScheme.Type == QuantizedType.UInt8 ? (0, 255) : (-128, 127);
                used[name] = p.Count == 1 && float.IsFinite(p[0].Scale) && p[0].Scale > 0 && p[0].ZeroPoint >= low && p[0].ZeroPoint <= high
                    ? p[0]
                    : throw new ArgumentException($"Activation '{name}' has parameters {p}; QDQ activations take one positive, finite scale and a zero point in [{low}, {high}] ({options.ActivationScheme.Type}).", nameof(activations));
            }
        }

        List<OnnxWeightReport> weights = [];
        List<string> biases = [];
        int raised = 0;
        foreach (NodeProto node in editor.Graph.Node.ToList())
        {
            if (!options.Selects(node) || OnnxWeightQuantizer.WeightOf(editor, node) is not string weightName)
            {
                continue;
            }

            (float[] values, int[] shape) = editor.Take(weightName);
            QuantizationScheme scheme = OnnxWeightQuantizer.WeightScheme(node, shape.Length, options, model.Opset);
            QuantizedTensor quantized = OnnxWeightQuantizer.RoundToNearest(values, shape, scheme, options, weightName);
            float[]? shift = correction?.Shift(node, values, quantized.Dequantize(), shape);
            if (node.OpType is "Conv" or "ConvTranspose" or "Gemm" && sites.Any(s => s.Node == node && s.Inputs.Contains(node.Input[0])) && used.TryGetValue(node.Input[0], out ScaleAndZeroPoint input) && Bias(editor, node, quantized.Parameters.Count, shift) is float[] bias)
            {
                // An int32 bias with scale s_x·s_w; where that overflows, the weight scales are raised, which changes the
                // rounding and so the shift: fit again until nothing more needs raising.
                float[] total = Sum(bias, shift);
                for (int attempt = 0; attempt < 4; attempt++)
                {
                    (QuantizationParameters fitted, int count) = FitBias(quantized.Parameters, total, input.Scale);
                    if (count == 0)
                    {
                        break;
                    }

                    quantized = QuantizedTensor.Quantize(values, shape, scheme, fitted, weightName);
                    shift = correction?.Shift(node, values, quantized.Dequantize(), shape);
                    total = Sum(bias, shift);
                    raised += count;
                }

                bool hasBias = node.Input.Count > 2 && node.Input[2].Length > 0;
                string name = hasBias ? node.Input[2] : node.Output[0] + "_bias";
                string dequantized = AddInt32Bias(editor, name, total, input.Scale, quantized.Parameters);
                if (hasBias)
                {
                    editor.Rewire(node, 2, dequantized);
                }
                else if (node.Input.Count > 2)
                {
                    node.Input[2] = dequantized;
                }
                else
                {
                    node.Input.Add(dequantized);
                }

                if (!biases.Contains(name))
                {
                    biases.Add(name);
                }
            }
            else if (shift is not null)
            {
                BiasCorrection.Apply(editor, node, shift, shape.Length);
            }

            editor.AddDequantized(weightName, quantized);
            weights.Add(new OnnxWeightReport(node.Name, node.OpType, weightName, scheme.Granularity.Kind == GranularityKind.PerChannel ? scheme.Granularity.Axis : null, TensorErrorReport.Compare(values, quantized)));
        }

        foreach ((string name, ScaleAndZeroPoint parameters) in used)
        {
            NodeProto[] consumers = [.. sites.Where(s => s.Inputs.Contains(name)).Select(s => s.Node)];
            editor.AddQuantizeDequantize(name, parameters, options.ActivationScheme.Type, consumers);
        }

        weights.AddRange(EmbeddingWriter.Quantize(editor, model, options));
        editor.Commit();
        return new OnnxStaticQuantizationResult(weights, used, biases, raised);
    }

    /// <summary>Lists the activations the rules would quantize (see <see cref="OnnxStaticQuantizationOptions"/>); the calibrator later drops those that turn out not to be float.</summary>
    /// <param name="model">The model.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <returns>The tensor names, in graph order, each once.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    public static IReadOnlyList<string> ActivationCandidates(OnnxModel model, OnnxStaticQuantizationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        return [.. Sites(model.Proto.Graph, options ?? new OnnxStaticQuantizationOptions()).SelectMany(s => s.Inputs).Distinct(StringComparer.Ordinal)];
    }

    private static void Validate(OnnxModel model, OnnxStaticQuantizationOptions options)
    {
        options.Validate();
        OnnxWeightQuantizer.RequirePerAxisDequantize(model);
    }

    /// <summary>The nodes whose activation inputs the rules quantize, with those inputs (<see cref="ActivationSites"/>).</summary>
    private static IReadOnlyList<(NodeProto Node, IReadOnlyList<string> Inputs)> Sites(GraphProto graph, OnnxStaticQuantizationOptions options)
    {
        HashSet<string> constants = new(graph.Initializer.Select(t => t.Name).Concat(graph.Node.Where(n => n.OpType == "Constant").SelectMany(n => n.Output)), StringComparer.Ordinal);
        return ActivationSites.Find(graph, options, constants.Contains);
    }

    /// <summary>
    /// The node's bias values when it has a float constant vector with one value per weight parameter (or any length for
    /// a per-tensor weight), zeros when it has none but a correction to make, else <see langword="null"/> (the bias stays float).
    /// </summary>
    private static float[]? Bias(OnnxGraphEditor editor, NodeProto node, int weightParameters, float[]? shift)
    {
        if (node.Input.Count < 3 || node.Input[2].Length == 0)
        {
            return shift is null ? null : new float[shift.Length];
        }

        return editor.ConstantShape(node.Input[2]) is { Count: 1 } dims && (weightParameters == 1 || dims[0] == weightParameters) ? editor.ReadConstant(node.Input[2]) : null;
    }

    private static float[] Sum(float[] bias, float[]? shift) => shift is null ? bias : [.. bias.Zip(shift, (b, s) => b + s)];

    /// <summary>Raises the weight scales of channels whose bias would pass <see cref="BiasLimit"/> with scale s_x·s_w.</summary>
    private static (QuantizationParameters Parameters, int Raised) FitBias(QuantizationParameters weight, float[] bias, float inputScale)
    {
        float[] scales = weight.Scales.ToArray();
        HashSet<int> raised = [];
        for (int c = 0; c < bias.Length; c++)
        {
            int p = scales.Length == 1 ? 0 : c;
            double needed = Math.Abs((double)bias[c]) / (inputScale * BiasLimit);
            if (scales[p] < needed)
            {
                // Rounded up to a float that is at least the bound, so the bias stays within the limit.
                scales[p] = MathF.BitIncrement((float)needed);
                raised.Add(p);
            }
        }

        return (new QuantizationParameters(scales, weight.ZeroPoints), raised.Count);
    }

    /// <summary>Adds the bias as int32 with scale s_x·s_w (zero point 0) and its DequantizeLinear along axis 0; returns the dequantized value's name.</summary>
    private static string AddInt32Bias(OnnxGraphEditor editor, string name, float[] bias, float inputScale, QuantizationParameters weight)
    {
        float[] scales = new float[bias.Length];
        int[] values = new int[bias.Length];
        for (int c = 0; c < bias.Length; c++)
        {
            scales[c] = inputScale * weight.Scales[weight.Count == 1 ? 0 : c];
            values[c] = scales[c] == 0 ? 0 : (int)Math.Clamp(Math.Round(bias[c] / (double)scales[c], MidpointRounding.ToEven), -BiasLimit, BiasLimit);
        }

        byte[] zeroPoints = new byte[bias.Length * sizeof(int)];
        string dequantized = editor.UniqueName(name + "_dequantized");
        editor.AddDequantized(dequantized, TensorProto.Types.DataType.Int32, [bias.Length], MemoryMarshal.AsBytes<int>(values), scales, zeroPoints, axis: 0);
        return dequantized;
    }
}
