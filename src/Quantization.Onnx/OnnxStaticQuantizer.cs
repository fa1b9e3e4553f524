using System.Runtime.InteropServices;

using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Rules for <see cref="OnnxStaticQuantizer"/>: the weight rules it inherits (which nodes, schemes, convention, bias
/// correction, calibration settings; the include and exclude patterns govern activations too), and the activations'.
/// </summary>
public sealed class OnnxStaticQuantizationOptions : OnnxWeightQuantizationOptions
{
    /// <summary>
    /// Gets the operator types whose float activation inputs get a QuantizeLinear/DequantizeLinear pair: Conv,
    /// ConvTranspose, MatMul, Gemm, Add, MaxPool, AveragePool and GlobalAveragePool by default, the operators ONNX
    /// Runtime's CPU provider runs as integer kernels when they sit between such pairs.
    /// </summary>
    public ISet<string> ActivationOpTypes { get; } = new HashSet<string>(StringComparer.Ordinal) { "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "MaxPool", "AveragePool", "GlobalAveragePool" };

    /// <summary>Gets or sets the activations' scheme: asymmetric uint8 per tensor (ONNX Runtime's default) unless set; it must be per tensor.</summary>
    public QuantizationScheme ActivationScheme { get; set; } = QuantizationScheme.UInt8PerTensorAsymmetric();

    /// <summary>Gets or sets the factory of each activation's observer, given <see cref="ActivationScheme"/>; a <see cref="MinMaxObserver"/> unless set.</summary>
    public Func<QuantizationScheme, IQuantizationObserver> CreateObserver { get; set; } = scheme => new MinMaxObserver(scheme);

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">The activation scheme is not int8 or uint8 per tensor, or GPTQ or MatMulNBits is asked for.</exception>
    internal override void Validate()
    {
        base.Validate();
        if (Gptq is not null)
        {
            throw new NotSupportedException("Static W8A8 rounds weights to nearest (with bias correction); GPTQ is applied by OnnxWeightQuantizer.QuantizeAsync.");
        }

        if (MatMulNBits is not null)
        {
            throw new NotSupportedException("Static W8A8 writes QDQ weights; MatMulNBits is a weight-only format (OnnxWeightQuantizer).");
        }

        if (ActivationScheme.Granularity.Kind != GranularityKind.PerTensor || ActivationScheme.Type is not (QuantizedType.Int8 or QuantizedType.UInt8))
        {
            throw new NotSupportedException($"QDQ activations are int8 or uint8 per tensor; the activation scheme is {ActivationScheme}.");
        }
    }
}

/// <summary>What <see cref="OnnxStaticQuantizer"/> did.</summary>
/// <param name="Weights">A report per quantized weight, in graph order.</param>
/// <param name="Activations">The parameters of every activation that got a QuantizeLinear/DequantizeLinear pair.</param>
/// <param name="Biases">The names of the biases stored as int32.</param>
/// <param name="RaisedWeightScales">How many weight channels had their scale raised so that the bias fits in int32 (see <see cref="OnnxStaticQuantizer"/>).</param>
public sealed record OnnxStaticQuantizationResult(IReadOnlyList<OnnxWeightReport> Weights, IReadOnlyDictionary<string, ScaleAndZeroPoint> Activations, IReadOnlyList<string> Biases, int RaisedWeightScales);

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

    /// <summary>Calibrates the model's activations through ONNX Runtime and quantizes it in place.</summary>
    /// <param name="model">The float model; it must import opset 13 or later.</param>
    /// <param name="calibrationData">Feeds for the model's inputs, one collection per run.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <param name="progress">Receives a report after each calibration run.</param>
    /// <param name="cancellationToken">Cancels calibration; the model is then unchanged.</param>
    /// <returns>What was quantized.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="calibrationData"/> is <see langword="null"/>.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 13, or a scheme is not supported.</exception>
    /// <exception cref="InvalidOperationException">The calibration data produced no runs.</exception>
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

        return Quantize(model, parameters, options, correction);
    }

    /// <summary>Quantizes the model in place with activation parameters computed beforehand (by <see cref="OnnxCalibrator"/> or any other means).</summary>
    /// <param name="model">The float model; it must import opset 13 or later.</param>
    /// <param name="activations">Per-tensor parameters by activation name; activations without an entry stay in float.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <returns>What was quantized.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="activations"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">An activation's parameters are not a single scale and zero point.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 13, or a scheme is not supported.</exception>
    public static OnnxStaticQuantizationResult Quantize(OnnxModel model, IReadOnlyDictionary<string, QuantizationParameters> activations, OnnxStaticQuantizationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(activations);
        options ??= new OnnxStaticQuantizationOptions();
        Validate(model, options);
        return Quantize(model, activations, options, correction: null);
    }

    private static OnnxStaticQuantizationResult Quantize(OnnxModel model, IReadOnlyDictionary<string, QuantizationParameters> activations, OnnxStaticQuantizationOptions options, BiasCorrection? correction)
    {
        Dictionary<string, ScaleAndZeroPoint> used = new(StringComparer.Ordinal);
        foreach (string name in ActivationCandidates(model, options))
        {
            if (activations.TryGetValue(name, out QuantizationParameters? p))
            {
                used[name] = p.Count == 1 && float.IsFinite(p[0].Scale) && p[0].Scale > 0
                    ? p[0]
                    : throw new ArgumentException($"Activation '{name}' has parameters {p}; QDQ activations take one positive, finite scale and a zero point.", nameof(activations));
            }
        }

        OnnxGraphEditor editor = new(model);
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
            QuantizationScheme scheme = OnnxWeightQuantizer.WeightScheme(node, shape.Length, options);
            int? axis = scheme.Granularity.Kind == GranularityKind.PerChannel ? scheme.Granularity.Axis : null;
            QuantizedTensor quantized = QuantizedTensor.Quantize(values, shape, scheme, weightName);
            float[]? shift = correction?.Shift(node, values, quantized.Dequantize(), shape);
            if (node.OpType is "Conv" or "ConvTranspose" or "Gemm" && used.TryGetValue(node.Input[0], out ScaleAndZeroPoint input) && Bias(editor, node, quantized.Parameters.Count, shift) is float[] bias)
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

            editor.AddDequantized(weightName, quantized, axis);
            weights.Add(new OnnxWeightReport(node.Name, node.OpType, weightName, axis, TensorErrorReport.Compare(values, quantized)));
        }

        foreach ((string name, ScaleAndZeroPoint parameters) in used)
        {
            NodeProto[] consumers = [.. editor.Graph.Node.Where(n => IsActivationNode(n, options) && ActivationInputs(n, editor).Contains(name))];
            editor.AddQuantizeDequantize(name, parameters, options.ActivationScheme.Type, consumers);
        }

        editor.Commit();
        return new OnnxStaticQuantizationResult(weights, used, biases, raised);
    }

    /// <summary>Lists the activations the rules would quantize: the float, non-constant inputs of the selected nodes (the calibrator later drops those that turn out not to be float).</summary>
    /// <param name="model">The model.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <returns>The tensor names, in graph order, each once.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    public static IReadOnlyList<string> ActivationCandidates(OnnxModel model, OnnxStaticQuantizationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OnnxStaticQuantizationOptions();
        OnnxGraphEditor editor = new(model, readOnly: true);
        HashSet<string> constants = new(model.Proto.Graph.Initializer.Select(t => t.Name).Concat(model.Proto.Graph.Node.Where(n => n.OpType == "Constant").SelectMany(n => n.Output)), StringComparer.Ordinal);
        return [.. model.Proto.Graph.Node
            .Where(n => IsActivationNode(n, options))
            .SelectMany(n => ActivationInputs(n, editor))
            .Where(name => !constants.Contains(name))
            .Distinct(StringComparer.Ordinal)];
    }

    private static void Validate(OnnxModel model, OnnxStaticQuantizationOptions options)
    {
        options.Validate();
        OnnxWeightQuantizer.RequirePerAxisDequantize(model);
    }

    private static bool IsActivationNode(NodeProto node, OnnxStaticQuantizationOptions options) =>
        options.ActivationOpTypes.Contains(node.OpType) && node.IsDefaultDomain() && options.SelectsName(node);

    /// <summary>The inputs of a node that carry activations: the data input of weighted operators, every non-constant input of the others.</summary>
    private static IEnumerable<string> ActivationInputs(NodeProto node, OnnxGraphEditor editor)
    {
        IEnumerable<string> inputs = node.OpType is "Conv" or "ConvTranspose" or "Gemm" ? node.Input.Take(1) : node.Input;
        return inputs.Where(i => i.Length > 0 && !editor.IsFloatConstant(i));
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
