using System.Collections.Frozen;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public static partial class OnnxOpsetUpgrader
{
    /// <summary>Rewrites a node of an older version into nodes of the target opset; may add initializers through the context.</summary>
    private delegate IEnumerable<NodeProto> Adapter(NodeProto node, UpgradeContext context);

    /// <summary>
    /// What is known of an operator: the opset from which its meaning is unchanged through opset 17, and the adapter for a
    /// node of an older version (none: such a node cannot be upgraded, or the operator did not exist yet).
    /// </summary>
    private sealed record Rule(int StableFrom, Adapter? Adapt = null);

    /// <summary>An opset no model version reaches: the operator is always rewritten (it is deprecated or removed).</summary>
    private const int Never = int.MaxValue;

    private static readonly FrozenDictionary<string, Rule> Rules = new Dictionary<string, Rule>(StringComparer.Ordinal)
    {
        // Element-wise math and activations. Versions after 7 only added types (13, 14: bfloat16, integer types).
        ["Abs"] = new(1),
        ["Neg"] = new(1),
        ["Reciprocal"] = new(1),
        ["Floor"] = new(1),
        ["Ceil"] = new(1),
        ["Round"] = new(11),
        ["Sqrt"] = new(1),
        ["Exp"] = new(1),
        ["Log"] = new(1),
        ["Pow"] = new(7),
        ["Erf"] = new(9),
        ["Sign"] = new(9),
        ["Sin"] = new(7),
        ["Cos"] = new(7),
        ["Tan"] = new(7),
        ["Asin"] = new(7),
        ["Acos"] = new(7),
        ["Atan"] = new(7),
        ["Sinh"] = new(9),
        ["Cosh"] = new(9),
        ["Asinh"] = new(9),
        ["Acosh"] = new(9),
        ["Atanh"] = new(9),
        ["Relu"] = new(1),
        ["LeakyRelu"] = new(1),
        ["PRelu"] = new(7),
        ["Elu"] = new(1),
        ["Selu"] = new(1),
        ["Celu"] = new(12),
        ["Sigmoid"] = new(1),
        ["HardSigmoid"] = new(1),
        ["Tanh"] = new(1),
        ["Softplus"] = new(1),
        ["Softsign"] = new(1),
        ["ThresholdedRelu"] = new(10),
        ["Shrink"] = new(9),
        ["Add"] = new(7),
        ["Sub"] = new(7),
        ["Mul"] = new(7),
        ["Div"] = new(7),
        ["Mod"] = new(10),
        ["Sum"] = new(6),
        ["Mean"] = new(6),
        ["Max"] = new(6),
        ["Min"] = new(6), // 8 only added broadcasting
        ["Equal"] = new(7),
        ["Greater"] = new(7),
        ["Less"] = new(7),
        ["GreaterOrEqual"] = new(12),
        ["LessOrEqual"] = new(12),
        ["And"] = new(7),
        ["Or"] = new(7),
        ["Xor"] = new(7),
        ["Not"] = new(1),
        ["Where"] = new(9),
        ["IsNaN"] = new(9),
        ["IsInf"] = new(10),
        ["BitShift"] = new(11),

        // Linear algebra, convolution, pooling, normalization. Opset 10 and 11 versions of the pools and convolutions
        // added attributes (ceil_mode, dilations) whose defaults keep the old meaning, or clarified the text.
        ["MatMul"] = new(1),
        ["Gemm"] = new(7),
        ["MatMulInteger"] = new(10),
        ["Einsum"] = new(12),
        ["Conv"] = new(1),
        ["ConvTranspose"] = new(1),
        ["ConvInteger"] = new(10),
        ["QLinearConv"] = new(10),
        ["QLinearMatMul"] = new(10),
        ["QuantizeLinear"] = new(10),
        ["DequantizeLinear"] = new(10),
        ["DynamicQuantizeLinear"] = new(11),
        ["MaxPool"] = new(1),
        ["AveragePool"] = new(7),
        ["LpPool"] = new(2),
        ["MaxUnpool"] = new(9),
        ["GlobalAveragePool"] = new(1),
        ["GlobalMaxPool"] = new(1),
        ["GlobalLpPool"] = new(2),
        ["MaxRoiPool"] = new(1),
        ["InstanceNormalization"] = new(6),
        ["LRN"] = new(1),
        ["LpNormalization"] = new(1),
        ["MeanVarianceNormalization"] = new(9),
        ["BatchNormalization"] = new(14, BatchNormalization),

        // Recurrent layers: opset 14 added `layout`, whose default 0 is the old layout.
        ["RNN"] = new(7),
        ["GRU"] = new(7),
        ["LSTM"] = new(7),

        // Reductions other than ReduceSum keep `axes` as an attribute until opset 18.
        ["ReduceMean"] = new(1),
        ["ReduceMax"] = new(1),
        ["ReduceMin"] = new(1),
        ["ReduceProd"] = new(1),
        ["ReduceL1"] = new(1),
        ["ReduceL2"] = new(1),
        ["ReduceLogSum"] = new(1),
        ["ReduceLogSumExp"] = new(1),
        ["ReduceSumSquare"] = new(1),
        ["ArgMax"] = new(1),
        ["ArgMin"] = new(1),
        ["CumSum"] = new(11),
        ["ReduceSum"] = new(13, AxesToInput),
        ["Squeeze"] = new(13, AxesToInput),
        ["Unsqueeze"] = new(13, AxesToInput),

        // Shapes, indexing and data movement.
        ["Reshape"] = new(5),
        ["Flatten"] = new(1),
        ["Transpose"] = new(1),
        ["Concat"] = new(4),
        ["Shape"] = new(1),
        ["Size"] = new(1),
        ["Expand"] = new(8),
        ["Tile"] = new(6),
        ["Gather"] = new(1),
        ["GatherElements"] = new(11),
        ["GatherND"] = new(11),
        ["ScatterElements"] = new(11),
        ["ScatterND"] = new(11),
        ["NonZero"] = new(9),
        ["OneHot"] = new(9),
        ["Compress"] = new(9),
        ["DepthToSpace"] = new(1),
        ["SpaceToDepth"] = new(1),
        ["ReverseSequence"] = new(10),
        ["Range"] = new(11),
        ["Unique"] = new(11),
        ["Identity"] = new(1),
        ["Cast"] = new(6),
        ["Constant"] = new(1),
        ["ConstantOfShape"] = new(9),
        ["EyeLike"] = new(9),
        ["Split"] = new(13, SplitToInput),
        ["Slice"] = new(10, SliceToInputs),
        ["Pad"] = new(11, PadToInputs),
        ["Clip"] = new(11, ClipToInputs),
        ["TopK"] = new(10, TopKToInput),
        ["Dropout"] = new(12, DropoutToIdentity),
        ["Resize"] = new(11, UpsampleToResize),
        ["Upsample"] = new(Never, UpsampleToResize),
        ["Scatter"] = new(Never, ScatterToScatterElements),
        ["Softmax"] = new(13, SoftmaxOnLastAxis),
        ["LogSoftmax"] = new(13, SoftmaxOnLastAxis),
        ["Hardmax"] = new(13, SoftmaxOnLastAxis),

        // Control flow: later versions only widened the types a branch or body may carry; subgraphs are upgraded too.
        ["If"] = new(1),
        ["Loop"] = new(1),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>
    /// Operators of <see cref="Rules"/> whose meaning changed after opset 17: the version of the change and the adapter
    /// that rewrites a node of an earlier version, applied when the target reaches that version.
    /// </summary>
    private static readonly FrozenDictionary<string, (int Version, Adapter Adapt)> LaterChanges = new Dictionary<string, (int, Adapter)>(StringComparer.Ordinal)
    {
        ["ReduceMean"] = (18, AxesToInput),
        ["ReduceMax"] = (18, AxesToInput),
        ["ReduceMin"] = (18, AxesToInput),
        ["ReduceProd"] = (18, AxesToInput),
        ["ReduceL1"] = (18, AxesToInput),
        ["ReduceL2"] = (18, AxesToInput),
        ["ReduceLogSum"] = (18, AxesToInput),
        ["ReduceLogSumExp"] = (18, AxesToInput),
        ["ReduceSumSquare"] = (18, AxesToInput),
        ["Split"] = (18, SplitOutputCount),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Operators whose first output has the element type of their first input, to find the type of a value no value_info declares.</summary>
    private static readonly FrozenSet<string> TypePreserving = FrozenSet.ToFrozenSet(
    [
        "Abs", "Add", "AveragePool", "BatchNormalization", "Ceil", "Clip", "Concat", "Conv", "ConvTranspose", "Div", "Dropout",
        "Elu", "Exp", "Expand", "Flatten", "Floor", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "Identity",
        "InstanceNormalization", "LeakyRelu", "Log", "LogSoftmax", "LRN", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul", "Neg", "Pad",
        "Pow", "PRelu", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize", "Selu", "Sigmoid",
        "Slice", "Softmax", "Softplus", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose", "Unsqueeze", "Upsample",
    ], StringComparer.Ordinal);
}
