using System.Runtime.InteropServices;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Dynamic quantization (W8A8 with run-time activation scales) of an ONNX model, with no calibration data (except to
/// smooth the model first, see <see cref="OnnxDynamicQuantizationOptions.SmoothQuant"/>): the constant
/// 2-D weights of MatMul and Gemm nodes become symmetric int8 per output channel, and their inputs are quantized on
/// every run, in the operator pattern that ONNX Runtime's CPU provider fuses into its integer kernels.
/// </summary>
/// <remarks>
/// <para>
/// Each selected node <c>Y = X·W</c> becomes
/// <c>(x_q, x_scale, x_zero) = DynamicQuantizeLinear(X)</c>, <c>Y = Cast(MatMulInteger(x_q, W_q, x_zero)) · (x_scale · w_scale)</c>:
/// X as uint8 with one asymmetric scale for the whole tensor computed at run time (range including 0, as the ONNX
/// operator defines), W_q int8 [K, N] with zero point 0 and one scale per output column (w_scale has N values). The
/// scale product is a Mul node of its own, <c>Mul(x_scale, w_scale)</c>, as ONNX Runtime's MatMulIntegerToFloat fusion
/// expects, and a MatMul's following bias Add gets the constant as its second input, where that fusion takes it in.
/// At the extended and default optimisation levels ONNX Runtime 1.31 fuses MatMulInteger + Cast + Mul (+ bias Add)
/// into <c>com.microsoft.MatMulIntegerToFloat</c>, and that with its DynamicQuantizeLinear into
/// <c>com.microsoft.DynamicQuantizeMatMul</c> when the DynamicQuantizeLinear feeds nothing else. An input that several
/// selected nodes read (the query, key and value projections) is quantized once and shared, so those stay
/// MatMulIntegerToFloat.
/// </para>
/// <para>
/// A Gemm is written the same way when it has no transA and beta is 1 (or no C): its weight is stored as [K, N]
/// whatever transB, alpha is folded into the weight before rounding, and C is added after the scaling. MatMuls whose
/// second input is not a constant (attention's activation × activation products) and weights that other nodes read too
/// stay in float.
/// </para>
/// <para>
/// Weights use the whole restricted int8 range [-127, 127]. On x86 CPUs without VNNI (AVX2, and AVX-512 before Cascade
/// Lake), ONNX Runtime's u8 × s8 kernels multiply with <c>vpmaddubsw</c>, which saturates a pair sum above 32767
/// (255·127·2 = 64770 is possible), and the model loses accuracy there (seen on a Zen 2: a MatMul's cosine to its float
/// output 0.9929). ONNX Runtime's Python quantizer offers <c>reduce_range</c> (7-bit weights) against it, which costs
/// accuracy everywhere. Here, give such a CPU asymmetric uint8 weights (<see cref="OnnxWeightQuantizationOptions.Scheme"/>
/// = <c>new QuantizationScheme(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerChannel(1))</c>,
/// <c>ptq --weight-type uint8</c>): W_q is stored as uint8 with one zero point per column, MatMulInteger takes them as
/// its fourth input, and ONNX Runtime runs its u8 × u8 kernels, which widen to 16 bits and do not saturate.
/// </para>
/// <para>
/// One scale per activation tensor lets a few outlier channels (in transformers, often those of one token) set the range
/// that every other channel is rounded on. <see cref="QuantizeAsync"/> with <see cref="OnnxDynamicQuantizationOptions.SmoothQuant"/>
/// first smooths the model on calibration data (<see cref="OnnxSmoothQuant"/>, as llm-compressor's W8A8-dynamic recipes
/// do), moving those channels' magnitude into the weights, whose scales are per channel.
/// </para>
/// </remarks>
public static class OnnxDynamicQuantizer
{
    /// <summary>Quantizes the model in place.</summary>
    /// <param name="model">The float model; it must import opset 11 or later (DynamicQuantizeLinear).</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <returns>The weights quantized and the activations quantized at run time.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The options name an operator other than MatMul and Gemm.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 11, or a scheme is neither symmetric int8 nor asymmetric uint8, per channel or per tensor, or GPTQ or MatMulNBits is asked for.</exception>
    /// <exception cref="InvalidDataException">A weight's stored data does not match its shape; the model is then unchanged.</exception>
    /// <exception cref="NonFiniteValueException">A weight holds NaN or an infinity; the model is then unchanged.</exception>
    /// <exception cref="NotSupportedException">Also when <see cref="OnnxDynamicQuantizationOptions.SmoothQuant"/> is set: smoothing needs calibration data, so use <see cref="QuantizeAsync"/>.</exception>
    public static OnnxDynamicQuantizationResult Quantize(OnnxModel model, OnnxDynamicQuantizationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OnnxDynamicQuantizationOptions();
        Validate(model, options);
        if (options.SmoothQuant is not null)
        {
            throw new NotSupportedException("SmoothQuant measures the model on calibration data; quantize with QuantizeAsync and calibration data, or set SmoothQuant to null.");
        }

        return QuantizeValidated(model, options);
    }

    /// <summary>
    /// Smooths the model on calibration data when <see cref="OnnxDynamicQuantizationOptions.SmoothQuant"/> is set (the α
    /// search, if on, measuring activations as dynamic quantization rounds them: see
    /// <see cref="OnnxSmoothQuantOptions.DynamicActivations"/>), then quantizes it in place as <see cref="Quantize"/> does.
    /// Without SmoothQuant, the calibration data is not read.
    /// </summary>
    /// <param name="model">The float model; it must import opset 11 or later (DynamicQuantizeLinear).</param>
    /// <param name="calibrationData">Feeds for the model's inputs, one collection per run, for SmoothQuant.</param>
    /// <param name="options">The rules; the defaults when <see langword="null"/>.</param>
    /// <param name="progress">Receives a report after each calibration run.</param>
    /// <param name="cancellationToken">Cancels calibration and the α search; the model is then unchanged.</param>
    /// <returns>The weights quantized, the activations quantized at run time and what smoothing changed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> or <paramref name="calibrationData"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The options name an operator other than MatMul and Gemm, or SmoothQuant's options are inconsistent.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A SmoothQuant option is out of range.</exception>
    /// <exception cref="NotSupportedException">The model imports an opset older than 11, or a scheme is neither symmetric int8 nor asymmetric uint8, per channel or per tensor, or GPTQ or MatMulNBits is asked for.</exception>
    /// <exception cref="InvalidOperationException">SmoothQuant has groups to smooth but the calibration data produced no runs.</exception>
    /// <exception cref="InvalidDataException">A constant's stored data does not match its shape; the model is then unchanged.</exception>
    /// <exception cref="NonFiniteValueException">A weight, or a smoothed layer's input on the calibration data, holds NaN or an infinity; the model is then unchanged.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails on the model or a feed; the model is then unchanged.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the model is unchanged.</exception>
    public static async Task<OnnxDynamicQuantizationResult> QuantizeAsync(
        OnnxModel model,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> calibrationData,
        OnnxDynamicQuantizationOptions? options = null,
        IProgress<CalibrationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibrationData);
        options ??= new OnnxDynamicQuantizationOptions();
        Validate(model, options);
        if (options.SmoothQuant is not OnnxSmoothQuantOptions smoothQuant)
        {
            return QuantizeValidated(model, options);
        }

        smoothQuant.Validate();

        // Smoothing and quantization work on a copy, so that a failure or cancellation in either leaves the model as it was.
        OnnxModel working = model.Clone();
        OnnxSmoothQuantResult smoothed = await OnnxSmoothQuant.SmoothAsync(working, calibrationData, smoothQuant, dynamicActivations: true, options.Scheme, progress, cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        OnnxDynamicQuantizationResult result = QuantizeValidated(working, options);
        model.Proto.Graph = working.Proto.Graph;
        return result with { SmoothQuant = smoothed };
    }

    private static void Validate(OnnxModel model, OnnxDynamicQuantizationOptions options)
    {
        options.Validate();
        if (model.Opset < 11)
        {
            throw new NotSupportedException(FormattableString.Invariant(
                $"The model imports opset {model.Opset}; DynamicQuantizeLinear needs opset 11 or later. Upgrade it first with {nameof(OnnxOpsetUpgrader)}.{nameof(OnnxOpsetUpgrader.Upgrade)}(model)."));
        }
    }

    /// <summary>Quantizes the model in place with checked options, ignoring SmoothQuant.</summary>
    private static OnnxDynamicQuantizationResult QuantizeValidated(OnnxModel model, OnnxDynamicQuantizationOptions options)
    {
        OnnxGraphEditor editor = new(model);
        List<OnnxWeightReport> weights = [];
        List<string> activations = [];
        Dictionary<string, (string Quantized, string Scale, string ZeroPoint)> quantizedInputs = new(StringComparer.Ordinal);
        foreach (NodeProto node in editor.Graph.Node.ToList())
        {
            if (!options.Selects(node) || Target(editor, node) is not (string weightName, int k, int n))
            {
                continue;
            }

            List<NodeProto> inserted = [];
            string x = node.Input[0];
            if (!quantizedInputs.TryGetValue(x, out (string Quantized, string Scale, string ZeroPoint) input))
            {
                input = (editor.UniqueName(x + "_quantized"), editor.UniqueName(x + "_scale"), editor.UniqueName(x + "_zero_point"));
                quantizedInputs.Add(x, input);
                activations.Add(x);
                inserted.Add(new NodeProto { Name = editor.UniqueName(x + "_DynamicQuantizeLinear"), OpType = "DynamicQuantizeLinear", Input = { x }, Output = { input.Quantized, input.Scale, input.ZeroPoint } });
            }

            weights.Add(Rewrite(editor, node, weightName, k, n, input, inserted, options));
            editor.InsertBefore(node, [.. inserted]);
        }

        weights.AddRange(EmbeddingWriter.Quantize(editor, model, options));
        editor.Commit();
        return new OnnxDynamicQuantizationResult(weights, activations);
    }

    /// <summary>
    /// The node's weight with K and N when the node can be rewritten: a MatMul with a constant 2-D weight, or a Gemm
    /// without transA whose beta is 1 or that has no C; the weight read by this node only.
    /// </summary>
    private static (string Weight, int K, int N)? Target(OnnxGraphEditor editor, NodeProto node)
    {
        if (!node.IsDefaultDomain() || OnnxWeightQuantizer.WeightOf(editor, node) is not string weight || editor.ConstantShape(weight) is not { Count: 2 } dims
            || editor.IsFloatConstant(node.Input[0]) || editor.Graph.AllNodes().Count(n => n.Input.Contains(weight)) != 1 || editor.Graph.Output.Any(o => o.Name == weight))
        {
            return null;
        }

        if (node.OpType == "Gemm")
        {
            bool hasC = node.Input.Count > 2 && node.Input[2].Length > 0;
            if (node.FindAttribute("transA")?.I is not (null or 0) || (hasC && node.FindAttribute("beta")?.F is not (null or 1)))
            {
                return null;
            }
        }

        bool transB = node.GemmTransB();
        return (weight, checked((int)dims[transB ? 1 : 0]), checked((int)dims[transB ? 0 : 1]));
    }

    /// <summary>Quantizes the weight as int8 (or uint8 with its zero points) [K, N], queues MatMulInteger, the scale product and the Cast, and turns the node itself into the final Mul (or the bias Add of a Gemm).</summary>
    private static OnnxWeightReport Rewrite(OnnxGraphEditor editor, NodeProto node, string weightName, int k, int n, (string Quantized, string Scale, string ZeroPoint) input, List<NodeProto> inserted, OnnxDynamicQuantizationOptions options)
    {
        string opType = node.OpType;
        bool transB = node.GemmTransB();
        (float[] values, _) = editor.Take(weightName);
        float[] kn = transB ? OnnxWeightQuantizer.Transpose(values, n, k) : values;
        if (opType == "Gemm" && node.FindAttribute("alpha")?.F is float alpha && alpha != 1)
        {
            for (int i = 0; i < kn.Length; i++)
            {
                kn[i] *= alpha;
            }
        }

        QuantizationScheme scheme = options.NodeSchemes.TryGetValue(node.Name, out QuantizationScheme? own) ? own : options.Scheme;
        bool perChannel = scheme.Granularity.Kind == GranularityKind.PerChannel;
        QuantizedTensor quantized = OnnxWeightQuantizer.RoundToNearest(kn, [k, n], perChannel ? scheme.WithGranularity(QuantizationGranularity.PerChannel(1)) : scheme, options, weightName);
        bool unsigned = scheme.Type == QuantizedType.UInt8;
        string weight = editor.AddInitializer(weightName + "_quantized", unsigned ? TensorProto.Types.DataType.Uint8 : TensorProto.Types.DataType.Int8, [k, n], quantized.Data);
        string weightScale = editor.AddInitializer(weightName + "_scale", TensorProto.Types.DataType.Float, perChannel ? [n] : [], MemoryMarshal.AsBytes(quantized.Parameters.Scales));
        string[] integerInputs = unsigned
            ? [input.Quantized, weight, input.ZeroPoint, editor.AddInitializer(weightName + "_zero_point", TensorProto.Types.DataType.Uint8, perChannel ? [n] : [], [.. quantized.Parameters.ZeroPoints.ToArray().Select(z => (byte)z)])]
            : [input.Quantized, weight, input.ZeroPoint];

        string output = node.Output[0];
        string product = editor.UniqueName(output + "_MatMulInteger");
        string scale = editor.UniqueName(output + "_scale");
        string converted = editor.UniqueName(output + "_float");
        inserted.Add(new NodeProto { Name = editor.UniqueName(node.Name + "_MatMulInteger"), OpType = "MatMulInteger", Input = { integerInputs }, Output = { product } });
        inserted.Add(new NodeProto { Name = editor.UniqueName(node.Name + "_scale"), OpType = "Mul", Input = { input.Scale, weightScale }, Output = { scale } });
        inserted.Add(new NodeProto
        {
            Name = editor.UniqueName(node.Name + "_Cast"),
            OpType = "Cast",
            Input = { product },
            Output = { converted },
            Attribute = { new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (int)TensorProto.Types.DataType.Float } },
        });

        string? bias = opType == "Gemm" && node.Input.Count > 2 && node.Input[2].Length > 0 ? node.Input[2] : null;
        node.Domain = string.Empty;
        node.Attribute.Clear();
        node.Input.Clear();
        if (bias is null)
        {
            node.OpType = "Mul";
            node.Input.Add([converted, scale]);
            PutConstantSecond(editor, output);
        }
        else
        {
            string scaled = editor.UniqueName(output + "_unbiased");
            inserted.Add(new NodeProto { Name = editor.UniqueName(node.Name + "_Mul"), OpType = "Mul", Input = { converted, scale }, Output = { scaled } });
            node.OpType = "Add";
            node.Input.Add([scaled, bias]);
        }

        int axis = opType == "MatMul" || !transB ? 1 : 0;
        return new OnnxWeightReport(node.Name, opType, weightName, perChannel ? axis : null, TensorErrorReport.Compare(kn, quantized));
    }

    /// <summary>When the value's only reader is an Add whose other input is a float constant (a bias) in first place, swaps the Add's inputs, so that ONNX Runtime can fuse the bias.</summary>
    private static void PutConstantSecond(OnnxGraphEditor editor, string value)
    {
        NodeProto[] readers = [.. editor.Graph.AllNodes().Where(n => n.Input.Contains(value))];
        if (readers is [NodeProto add] && add.OpType == "Add" && add.IsDefaultDomain() && add.Input.Count == 2 && add.Input[1] == value && editor.IsFloatConstant(add.Input[0]))
        {
            (add.Input[0], add.Input[1]) = (add.Input[1], add.Input[0]);
        }
    }
}
