using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Weight-only quantization (W8A16) of an ONNX model: the float weights (initializers or Constant nodes) of Conv,
/// ConvTranspose, MatMul and Gemm become symmetric int8 per output channel, followed by a DequantizeLinear with the
/// channel axis of their operator (Conv 0, ConvTranspose 1, MatMul the last axis of B, Gemm by transB), so ONNX Runtime
/// runs the model unchanged otherwise. With <see cref="OnnxWeightQuantizationOptions.MatMulNBits"/> set, MatMul and
/// plain Gemm weights are written instead as ONNX Runtime's <c>com.microsoft.MatMulNBits</c> (8-bit blocks along K).
/// </summary>
public static class OnnxWeightQuantizer
{
    /// <summary>Quantizes the model's weights in place by rounding to nearest.</summary>
    /// <param name="model">The model; it must import opset 13 or later (per-axis DequantizeLinear).</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <returns>A report per quantized weight, in graph order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The options name an operator the quantizer does not know.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 13, or a scheme is not supported, or <see cref="OnnxWeightQuantizationOptions.Gptq"/> or <see cref="OnnxWeightQuantizationOptions.Awq"/> is set (they need the calibration data of <see cref="QuantizeAsync"/>).</exception>
    /// <exception cref="InvalidDataException">A weight's stored data does not match its shape; the model is then unchanged.</exception>
    /// <remarks>A weight that several nodes share is quantized once, along the channel axis of the first of them.</remarks>
    public static IReadOnlyList<OnnxWeightReport> Quantize(OnnxModel model, OnnxWeightQuantizationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OnnxWeightQuantizationOptions();
        options.Validate();
        RequirePerAxisDequantize(model);
        if (options.Gptq is not null)
        {
            throw new NotSupportedException("GPTQ needs calibration data: call QuantizeAsync, or set Gptq to null to round to nearest.");
        }

        if (options.Awq is not null)
        {
            throw new NotSupportedException("AWQ needs calibration data: call QuantizeAsync, or set Awq to null.");
        }

        return Quantize(model, options, correction: null, hessians: null);
    }

    /// <summary>
    /// Quantizes the model's weights in place, with empirical bias correction: the calibration data gives the mean of
    /// each quantized layer's input per feature, and the layer's bias takes back the shift ΔW·E[x] that rounding the
    /// weights causes (a bias Add is created where a MatMul has none). Runs the model once per feed in ONNX Runtime,
    /// keeping only running sums.
    /// </summary>
    /// <param name="model">The model; it must import opset 13 or later (per-axis DequantizeLinear).</param>
    /// <param name="calibrationData">Feeds for the model's inputs, one collection per run.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <param name="progress">Receives a report after each calibration run.</param>
    /// <param name="cancellationToken">Cancels calibration; the model is then unchanged.</param>
    /// <returns>A report per quantized weight, in graph order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="calibrationData"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The options name an operator the quantizer does not know.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 13, or a scheme is not supported.</exception>
    /// <exception cref="InvalidDataException">A weight's stored data does not match its shape; the model is then unchanged.</exception>
    /// <exception cref="InvalidOperationException">With <see cref="OnnxWeightQuantizationOptions.Awq"/>: the calibration data produced no runs (AWQ reads the source once, then the quantizer again: it must give the same batches each time).</exception>
    /// <exception cref="NonFiniteValueException">With <see cref="OnnxWeightQuantizationOptions.Awq"/>: an input of the scaled layers holds NaN or an infinity on the calibration data; the model is then unchanged.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails on the model or a feed.</exception>
    /// <remarks>Each calibration run executes synchronously on the calling thread; wrap the call in <see cref="Task.Run(Func{Task})"/> to keep a UI responsive.</remarks>
    public static async Task<IReadOnlyList<OnnxWeightReport>> QuantizeAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        OnnxWeightQuantizationOptions? options = null,
        IProgress<CalibrationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibrationData);
        options ??= new OnnxWeightQuantizationOptions();
        options.Validate();
        RequirePerAxisDequantize(model);
        if (options.Awq is AwqOptions awq)
        {
            // AWQ and quantization work on a copy, so that a failure or cancellation in either leaves the model as it was.
            OnnxModel working = model.Clone();
            await OnnxAwq.ApplyAsync(working, calibrationData, awq, n => OnnxAwq.WeightScheme(n, options), options.Selects, options.Calibration, progress, cancellationToken).ConfigureAwait(false);
            IReadOnlyList<OnnxWeightReport> reports = await CalibrateAndQuantizeAsync(working, calibrationData, options, progress, cancellationToken).ConfigureAwait(false);
            model.Proto.Graph = working.Proto.Graph;
            model.Proto.OpsetImport.Clear();
            model.Proto.OpsetImport.Add(working.Proto.OpsetImport);
            return reports;
        }

        return await CalibrateAndQuantizeAsync(model, calibrationData, options, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Calibrates the statistics the options ask for on the model as it is, then quantizes it in place.</summary>
    private static async Task<IReadOnlyList<OnnxWeightReport>> CalibrateAndQuantizeAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        OnnxWeightQuantizationOptions options,
        IProgress<CalibrationProgress>? progress,
        CancellationToken cancellationToken)
    {
        (BiasCorrection? correction, GptqHessians? hessians) = TrackLayerInputs(model, options);
        string[] tensors = [.. (correction?.TensorNames ?? []).Union(hessians?.TensorNames ?? [], StringComparer.Ordinal)];
        using (OnnxCalibrator calibrator = new(model, tensors, createObserver: null, options.Calibration.SessionOptions, options.Calibration.Logger, skipNonFloat: true, tap: new Tee([.. new IActivationRecorder?[] { correction, hessians }.OfType<IActivationRecorder>()])))
        {
            await calibrator.RunAsync(calibrationData, progress, cancellationToken).ConfigureAwait(false);
        }

        return Quantize(model, options, correction, hessians, cancellationToken);
    }

    /// <summary>The statistics of the quantized layers' inputs that the options ask for: means for bias correction, Hessians for GPTQ.</summary>
    internal static (BiasCorrection? Correction, GptqHessians? Hessians) TrackLayerInputs(OnnxModel model, OnnxWeightQuantizationOptions options)
    {
        BiasCorrection? correction = options.BiasCorrection ? new BiasCorrection() : null;
        GptqHessians? hessians = options.Gptq is null ? null : new GptqHessians();
        OnnxGraphEditor editor = new(model, readOnly: true);
        foreach (NodeProto node in editor.Graph.Node.Where(n => options.Selects(n) && WeightOf(editor, n) is not null))
        {
            IReadOnlyList<long> dims = editor.ConstantShape(node.Input[1])!;
            bool gptq = hessians is not null && GptqHessians.Supports(node, dims.Count);
            if (correction is not null && BiasCorrection.Supports(node, dims.Count) && !gptq)
            {
                correction.Track(node);
            }

            if (hessians is not null && node.OpType == "Conv")
            {
                hessians.TrackConv(node, dims, options.NodeSchemes.TryGetValue(node.Name, out QuantizationScheme? own) ? own : options.Scheme);
            }
            else if (gptq)
            {
                hessians?.Track(node, checked((int)dims[node.GemmTransB() ? 1 : 0]));
            }
        }

        return (correction, hessians);
    }

    private static List<OnnxWeightReport> Quantize(OnnxModel model, OnnxWeightQuantizationOptions options, BiasCorrection? correction, GptqHessians? hessians, CancellationToken cancellationToken = default)
    {
        OnnxGraphEditor editor = new(model);
        List<OnnxWeightReport> reports = [];
        foreach (NodeProto node in editor.Graph.Node.ToList())
        {
            if (!options.Selects(node) || WeightOf(editor, node) is not string weightName)
            {
                continue;
            }

            if (options.MatMulNBits is MatMulNBitsOptions nbits && MatMulNBitsTarget(editor, node, weightName) is (int k, int n))
            {
                reports.Add(WriteMatMulNBits(editor, node, weightName, k, n, options, nbits, correction, hessians?.For(node), cancellationToken));
                continue;
            }

            (float[] values, int[] shape) = editor.Take(weightName);
            QuantizationScheme scheme = WeightScheme(node, shape.Length, options, model.Opset);
            QuantizedTensor quantized = options.Gptq is not GptqOptions gptq || hessians is null ? RoundToNearest(values, shape, scheme, options, weightName)
                : node.OpType == "Conv" ? hessians.QuantizeConv(node, values, shape, scheme, WithInputAxis(gptq, 1, options), weightName, cancellationToken) ?? RoundToNearest(values, shape, scheme, options, weightName)
                : hessians.For(node) is HessianAccumulator hessian ? GptqQuantizer.Quantize(values, shape, scheme, hessian, WithInputAxis(gptq, node.GemmTransB() ? 1 : 0, options), weightName, cancellationToken)
                : RoundToNearest(values, shape, scheme, options, weightName);
            editor.AddDequantized(weightName, quantized);
            if (correction?.Shift(node, values, quantized.Dequantize(), shape) is float[] shift)
            {
                BiasCorrection.Apply(editor, node, shift, shape.Length);
            }

            int? axis = scheme.Granularity.Kind == GranularityKind.PerTensor ? null : scheme.Granularity.Axis;
            reports.Add(new OnnxWeightReport(node.Name, node.OpType, weightName, axis, TensorErrorReport.Compare(values, quantized)));
        }

        reports.AddRange(EmbeddingWriter.Quantize(editor, model, options));
        editor.Commit();
        if (model.Proto.Graph.Node.Any(n => n.OpType == "MatMulNBits" && n.Domain == MatMulNBitsWriter.Domain))
        {
            MatMulNBitsWriter.ImportDomain(model);
        }

        return reports;
    }

    /// <summary>
    /// The weight's K and N when the node can be written as MatMulNBits: a MatMul with a 2-D weight, or a Gemm without
    /// transA, with alpha = beta = 1 and no bias or a constant bias of N values; the weight read by this node only.
    /// </summary>
    private static (int K, int N)? MatMulNBitsTarget(OnnxGraphEditor editor, NodeProto node, string weightName)
    {
        if (editor.ConstantShape(weightName) is not { Count: 2 } dims || node.OpType is not ("MatMul" or "Gemm") || !node.IsDefaultDomain()
            || editor.Graph.AllNodes().Count(n => n.Input.Contains(weightName)) != 1 || editor.Graph.Output.Any(o => o.Name == weightName))
        {
            return null;
        }

        bool transB = node.GemmTransB();
        (int k, int n) = (checked((int)dims[transB ? 1 : 0]), checked((int)dims[transB ? 0 : 1]));
        if (node.OpType == "Gemm")
        {
            bool plain = node.FindAttribute("transA")?.I is null or 0 && node.FindAttribute("alpha")?.F is null or 1 && node.FindAttribute("beta")?.F is null or 1;
            bool biasFits = node.Input.Count < 3 || node.Input[2].Length == 0 || (editor.ConstantShape(node.Input[2]) is { Count: 1 } bias && bias[0] == n);
            if (!plain || !biasFits)
            {
                return null;
            }
        }

        return (k, n);
    }

    /// <summary>
    /// Quantizes the node's weight in blocks along K (by GPTQ when there is a Hessian for the node, else to nearest) and
    /// turns the node into a MatMulNBits (bias correction first, when asked).
    /// </summary>
    private static OnnxWeightReport WriteMatMulNBits(OnnxGraphEditor editor, NodeProto node, string weightName, int k, int n, OnnxWeightQuantizationOptions options, MatMulNBitsOptions nbits, BiasCorrection? correction, HessianAccumulator? hessian, CancellationToken cancellationToken)
    {
        string opType = node.OpType;
        bool transB = node.GemmTransB();
        (float[] values, int[] shape) = editor.Take(weightName);
        QuantizationScheme scheme = options.NodeSchemes.TryGetValue(node.Name, out QuantizationScheme? own) ? own : options.Scheme;
        float[] rows = transB ? values : Transpose(values, k, n);
        QuantizedTensor blocks = hessian is not null && options.Gptq is GptqOptions gptq
            ? GptqQuantizer.Quantize(rows, [n, k], MatMulNBitsWriter.BlockScheme(scheme, nbits.BlockSize), hessian, WithInputAxis(gptq, 1, options), weightName, cancellationToken)
            : RoundToNearest(rows, [n, k], MatMulNBitsWriter.BlockScheme(scheme, nbits.BlockSize), options, weightName);
        float[] restoredRows = blocks.Dequantize();
        float[] restored = transB ? restoredRows : Transpose(restoredRows, n, k);
        if (correction?.Shift(node, values, restored, shape) is float[] shift)
        {
            BiasCorrection.Apply(editor, node, shift, shape.Length);
        }

        string? bias = opType == "Gemm" && node.Input.Count > 2 && node.Input[2].Length > 0 ? node.Input[2] : null;
        long bytes = MatMulNBitsWriter.Write(editor, node, node.Input[0], blocks, nbits.AccuracyLevel, bias);
        return new OnnxWeightReport(node.Name, opType, weightName, transB ? 0 : 1, TensorErrorReport.Compare(weightName, values, restored, values.Length * (long)sizeof(float), bytes));
    }

    /// <summary>The transpose of a row-major [rows, columns] matrix.</summary>
    internal static float[] Transpose(ReadOnlySpan<float> values, int rows, int columns)
    {
        float[] transposed = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                transposed[(c * rows) + r] = values[(r * columns) + c];
            }
        }

        return transposed;
    }

    /// <summary>
    /// The GPTQ settings for one weight: its input axis (0 for MatMul's [K, N] and Gemm's, 1 for Gemm with transB and for
    /// the rows of MatMulNBits and Conv patches) and the quantizer's <see cref="OnnxWeightQuantizationOptions.RangeSearch"/>.
    /// </summary>
    private static GptqOptions WithInputAxis(GptqOptions gptq, int inputAxis, OnnxWeightQuantizationOptions options) => new()
    {
        DampeningFraction = gptq.DampeningFraction,
        BlockSize = gptq.BlockSize,
        ActivationOrder = gptq.ActivationOrder,
        InputAxis = inputAxis,
        RangeSearch = options.RangeSearch,
    };

    /// <summary>Rounds a weight to nearest, with the ranges of <see cref="OnnxWeightQuantizationOptions.RangeSearch"/> when it is set, else min/max.</summary>
    internal static QuantizedTensor RoundToNearest(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, QuantizationScheme scheme, OnnxWeightQuantizationOptions options, string name) =>
        options.RangeSearch is WeightRangeSearch search ? search.Quantize(values, shape, scheme, name) : QuantizedTensor.Quantize(values, shape, scheme, name);

    /// <summary>Throws unless the model imports opset 13 or later, which per-axis DequantizeLinear needs.</summary>
    internal static void RequirePerAxisDequantize(OnnxModel model)
    {
        if (model.Opset < 13)
        {
            throw new NotSupportedException(FormattableString.Invariant(
                $"The model imports opset {model.Opset}; per-channel DequantizeLinear needs opset 13 or later. Upgrade it first with {nameof(OnnxOpsetUpgrader)}.{nameof(OnnxOpsetUpgrader.Upgrade)}(model)."));
        }
    }

    /// <summary>The node's weight: its second input when that is a float constant of rank 2 or more not yet quantized; vectors stay in float.</summary>
    internal static string? WeightOf(OnnxGraphEditor editor, NodeProto node) =>
        node.OpType is "Conv" or "ConvTranspose" or "MatMul" or "Gemm" && node.Input.Count >= 2 && editor.ConstantShape(node.Input[1]) is { Count: >= 2 } ? node.Input[1] : null;

    /// <summary>
    /// The weight's scheme: the node's own or the default, per channel on the operator's channel axis, or in blocks along
    /// its input axis. 4-bit types and blocks need DequantizeLinear 21.
    /// </summary>
    internal static QuantizationScheme WeightScheme(NodeProto node, int rank, OnnxWeightQuantizationOptions options, long opset)
    {
        QuantizationScheme scheme = options.NodeSchemes.TryGetValue(node.Name, out QuantizationScheme? own) ? own : options.Scheme;
        bool blocked = scheme.Granularity.Kind == GranularityKind.PerGroup;
        if ((blocked || scheme.Type.GetBitWidth() == 4) && opset < 21)
        {
            throw new NotSupportedException(FormattableString.Invariant(
                $"Node '{node.Name}' ({node.OpType}): {(blocked ? "blocked" : scheme.Type.ToString())} DequantizeLinear needs opset 21 and the model imports {opset}. Upgrade it with {nameof(OnnxOpsetUpgrader)}.{nameof(OnnxOpsetUpgrader.Upgrade)}(model, 21), or write MatMul and Gemm weights as MatMulNBits."));
        }

        return scheme.Granularity.Kind switch
        {
            GranularityKind.PerTensor => scheme,
            GranularityKind.PerChannel => scheme.WithGranularity(QuantizationGranularity.PerChannel(ChannelAxis(node, rank))),
            GranularityKind.PerGroup => scheme.WithGranularity(QuantizationGranularity.PerGroup(scheme.Granularity.GroupSize, InputAxis(node, rank))),
            _ => throw new NotSupportedException($"Node '{node.Name}': weights take per-tensor, per-channel or blocked parameters, not {scheme.Granularity}."),
        };
    }

    /// <summary>The input-channel (reduction) axis of a weight for its operator.</summary>
    private static int InputAxis(NodeProto node, int rank) => node.OpType switch
    {
        "ConvTranspose" => 0,
        "MatMul" => rank - 2,
        "Gemm" => node.GemmTransB() ? 1 : 0,
        _ => 1,
    };

    /// <summary>The output-channel axis of a weight for its operator.</summary>
    private static int ChannelAxis(NodeProto node, int rank) => node.OpType switch
    {
        "ConvTranspose" => 1,
        "MatMul" => rank - 1,
        "Gemm" => node.GemmTransB() ? 0 : 1,
        _ => 0,
    };
}
