using System.Runtime.InteropServices;

using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Benchmarks;

/// <summary>
/// One ONNX Runtime session of a one-node model, Y = A x B with B a constant [K, N] initializer: fp32 MatMul, or
/// MatMulInteger with uint8 A (zero point 128) or int8 A, int8 B and int32 Y; or com.microsoft.MatMulNBits with a 4-bit
/// B. Inputs and outputs are preallocated OrtValues, so a run measures only the kernel.
/// </summary>
internal sealed class OrtMatMul : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();
    private readonly OrtValue _input;
    private readonly OrtValue _output;
    private readonly string[] _inputNames = ["A"];
    private readonly string[] _outputNames = ["Y"];

    private OrtMatMul(byte[] model, int threads, OrtValue input, OrtValue output)
    {
        using SessionOptions options = new() { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        _session = new InferenceSession(model, options);
        _input = input;
        _output = output;
    }

    /// <summary>Creates an fp32 MatMul of <paramref name="weight"/> (row-major [N, K], transposed into B).</summary>
    public static OrtMatMul Float(float[] weight, int n, int k, int m, int threads)
    {
        float[] b = Transpose(weight, n, k);
        TensorProto initializer = new() { Name = "B", DataType = (int)TensorProto.Types.DataType.Float, Dims = { k, n }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(b.AsSpan())) };
        byte[] model = Model("MatMul", [initializer], TensorProto.Types.DataType.Float, TensorProto.Types.DataType.Float, m, k, n);
        float[] a = new float[m * k];
        new Random(1).NextBytes(MemoryMarshal.AsBytes(a.AsSpan()));
        for (int i = 0; i < a.Length; i++)
        {
            a[i] = (float)((i % 97) - 48) / 48;
        }

        return new OrtMatMul(model, threads, OrtValue.CreateTensorValueFromMemory(a, [m, k]), OrtValue.CreateTensorValueFromMemory(new float[m * n], [m, n]));
    }

    /// <summary>Creates a MatMulInteger of an int8 weight (row-major [N, K], transposed into B) with uint8 or int8 activations.</summary>
    public static OrtMatMul Integer(sbyte[] weight, int n, int k, int m, int threads, bool unsignedActivations)
    {
        sbyte[] b = Transpose(weight, n, k);
        List<TensorProto> initializers = [new() { Name = "B", DataType = (int)TensorProto.Types.DataType.Int8, Dims = { k, n }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(b.AsSpan())) }];
        if (unsignedActivations)
        {
            initializers.Add(new TensorProto { Name = "a_zero_point", DataType = (int)TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(128) });
        }

        TensorProto.Types.DataType aType = unsignedActivations ? TensorProto.Types.DataType.Uint8 : TensorProto.Types.DataType.Int8;
        byte[] model = Model("MatMulInteger", initializers, aType, TensorProto.Types.DataType.Int32, m, k, n);
        byte[] a = new byte[m * k];
        new Random(1).NextBytes(a);
        OrtValue input = unsignedActivations
            ? OrtValue.CreateTensorValueFromMemory(a, [m, k])
            : OrtValue.CreateTensorValueFromMemory(MemoryMarshal.Cast<byte, sbyte>(a.AsSpan()).ToArray(), [m, k]);
        return new OrtMatMul(model, threads, input, OrtValue.CreateTensorValueFromMemory(new int[m * n], [m, n]));
    }

    /// <summary>
    /// Creates a <c>com.microsoft.MatMulNBits</c> (bits 4, zero points absent, i.e. 8) of a symmetric Int4 weight
    /// [N, K] quantized per group along K: B uint8 [N, k_blocks, blockSize / 2], two codes (q + 8) a byte, the even
    /// feature in the low nibble; scales float [N, k_blocks]. <paramref name="input"/> [m, k] and
    /// <paramref name="output"/> [m, n] are the session's buffers.
    /// </summary>
    public static OrtMatMul MatMulNBits(QuantizedTensor weight, int accuracyLevel, float[] input, float[] output, int m, int threads)
    {
        int n = weight.Shape[0], k = weight.Shape[1], blockSize = weight.Scheme.Granularity.GroupSize;
        int kBlocks = (k + blockSize - 1) / blockSize;
        sbyte[] values = weight.GetInt4Data();
        byte[] packed = new byte[n * kBlocks * blockSize / 2];
        for (int row = 0; row < n; row++)
        {
            for (int c = 0; c < k; c++)
            {
                int i = (((row * kBlocks) + (c / blockSize)) * blockSize) + (c % blockSize);
                packed[i / 2] |= (byte)((values[(row * k) + c] + 8) << (4 * (i % 2)));
            }
        }

        TensorProto b = new() { Name = "B", DataType = (int)TensorProto.Types.DataType.Uint8, Dims = { n, kBlocks, blockSize / 2 }, RawData = ByteString.CopyFrom(packed) };
        TensorProto scales = new() { Name = "scales", DataType = (int)TensorProto.Types.DataType.Float, Dims = { n, kBlocks }, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(weight.Parameters.Scales)) };
        NodeProto node = new() { Name = "MatMulNBits", OpType = "MatMulNBits", Domain = "com.microsoft", Input = { "A", "B", "scales" }, Output = { "Y" } };
        node.Attribute.Add(
        [
            Int("K", k), Int("N", n), Int("bits", 4), Int("block_size", blockSize), Int("accuracy_level", accuracyLevel),
        ]);
        ModelProto model = new()
        {
            IrVersion = 8,
            OpsetImport = { new OperatorSetIdProto { Version = 13 }, new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 } },
            Graph = new GraphProto
            {
                Name = "MatMulNBits",
                Node = { node },
                Initializer = { b, scales },
                Input = { Value("A", TensorProto.Types.DataType.Float, m, k) },
                Output = { Value("Y", TensorProto.Types.DataType.Float, m, n) },
            },
        };
        return new OrtMatMul(model.ToByteArray(), threads, OrtValue.CreateTensorValueFromMemory(input, [m, k]), OrtValue.CreateTensorValueFromMemory(output, [m, n]));
    }

    public void Run() => _session.Run(_runOptions, _inputNames, [_input], _outputNames, [_output]);

    public void Dispose()
    {
        _session.Dispose();
        _runOptions.Dispose();
        _input.Dispose();
        _output.Dispose();
    }

    private static T[] Transpose<T>(T[] rows, int n, int k)
    {
        T[] columns = new T[rows.Length];
        for (int r = 0; r < n; r++)
        {
            for (int c = 0; c < k; c++)
            {
                columns[(c * n) + r] = rows[(r * k) + c];
            }
        }

        return columns;
    }

    private static byte[] Model(string op, IEnumerable<TensorProto> initializers, TensorProto.Types.DataType inputType, TensorProto.Types.DataType outputType, int m, int k, int n)
    {
        string[] inputs = op == "MatMulInteger" && initializers.Any(i => i.Name == "a_zero_point") ? ["A", "B", "a_zero_point"] : ["A", "B"];
        ModelProto model = new()
        {
            IrVersion = 8,
            OpsetImport = { new OperatorSetIdProto { Version = 13 } },
            Graph = new GraphProto
            {
                Name = op,
                Node = { new NodeProto { Name = op, OpType = op, Input = { inputs }, Output = { "Y" } } },
                Initializer = { initializers },
                Input = { Value("A", inputType, m, k) },
                Output = { Value("Y", outputType, m, n) },
            },
        };
        return model.ToByteArray();
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    private static ValueInfoProto Value(string name, TensorProto.Types.DataType type, params long[] dims)
    {
        TensorShapeProto shape = new();
        shape.Dim.AddRange(dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }
}
