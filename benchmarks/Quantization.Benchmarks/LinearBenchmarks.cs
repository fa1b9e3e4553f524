using System.Numerics.Tensors;

using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// The int8 linear layer, K = N = 4096, against the best fp32 GEMV/GEMM written with <see cref="TensorPrimitives"/>
/// (the baseline: one <see cref="TensorPrimitives.Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/> per row and token)
/// and against ONNX Runtime's MatMulInteger (uint8 x int8 and int8 x int8) and fp32 MatMul in the same run.
/// </summary>
/// <remarks>
/// Every method rotates over several copies of its weight (64 MiB or more in all, beyond the caches), as decoding does:
/// each layer's weight comes from memory. The W8A8 rows include quantizing the activations and scaling the outputs;
/// ONNX Runtime's MatMulInteger rows are given quantized activations and return int32 sums.
/// </remarks>
[Config(typeof(KernelBenchmarkConfig))]
public class LinearBenchmarks : IDisposable
{
    private const int Features = 4096;
    private const int Int8Copies = 4;
    private const int FloatCopies = 2;

    private float[][] _floatWeights = [];
    private QuantizedLinear[] _layers = [];
    private OrtMatMul[] _ortU8S8 = [];
    private OrtMatMul[] _ortS8S8 = [];
    private OrtMatMul[] _ortFloat = [];
    private float[] _input = [];
    private float[] _output = [];
    private int _next;

    /// <summary>Gets or sets the number of tokens: 1 is a GEMV.</summary>
    [Params(1, 4, 16, 64)]
    public int M { get; set; }

    /// <summary>Gets or sets the number of threads.</summary>
    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup(Target = nameof(Fp32TensorPrimitives))]
    public void SetupFloat() => CreateFloatWeightsAndInput();

    [GlobalSetup(Targets = [nameof(W8A8), nameof(W8A16)])]
    public void SetupLayers()
    {
        CreateFloatWeightsAndInput();
        _layers = new QuantizedLinear[Int8Copies];
        for (int c = 0; c < Int8Copies; c++)
        {
            _layers[c] = new QuantizedLinear(QuantizeCopy(c)) { MaxDegreeOfParallelism = Threads };
        }
    }

    [GlobalSetup(Target = nameof(OrtMatMulIntegerU8S8))]
    public void SetupOrtU8S8() => _ortU8S8 = CreateOrtInteger(unsignedActivations: true);

    [GlobalSetup(Target = nameof(OrtMatMulIntegerS8S8))]
    public void SetupOrtS8S8() => _ortS8S8 = CreateOrtInteger(unsignedActivations: false);

    [GlobalSetup(Target = nameof(OrtMatMulFp32))]
    public void SetupOrtFloat()
    {
        CreateFloatWeightsAndInput();
        _ortFloat = new OrtMatMul[FloatCopies];
        for (int c = 0; c < FloatCopies; c++)
        {
            _ortFloat[c] = OrtMatMul.Float(_floatWeights[c], Features, Features, M, Threads);
        }
    }

    [GlobalCleanup]
    public void Dispose()
    {
        foreach (OrtMatMul session in _ortU8S8.Concat(_ortS8S8).Concat(_ortFloat))
        {
            session.Dispose();
        }

        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true)]
    public void Fp32TensorPrimitives()
    {
        float[] weight = _floatWeights[Next(FloatCopies)];
        if (Threads == 1)
        {
            DotRows(weight, _input, _output, Features, M, 0, Features);
        }
        else
        {
            Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, part =>
                DotRows(weight, _input, _output, Features, M, Features * part / Threads, Features * (part + 1) / Threads));
        }
    }

    [Benchmark]
    public void W8A8() => _layers[Next(Int8Copies)].Forward(_input, _output, M, QuantizedLinearMode.W8A8);

    [Benchmark]
    public void W8A16() => _layers[Next(Int8Copies)].Forward(_input, _output, M, QuantizedLinearMode.W8A16);

    [Benchmark]
    public void OrtMatMulIntegerU8S8() => _ortU8S8[Next(Int8Copies)].Run();

    [Benchmark]
    public void OrtMatMulIntegerS8S8() => _ortS8S8[Next(Int8Copies)].Run();

    [Benchmark]
    public void OrtMatMulFp32() => _ortFloat[Next(FloatCopies)].Run();

    private int Next(int copies) => _next++ % copies;

    private void CreateFloatWeightsAndInput() => (_floatWeights, _input, _output) = CreateFloatData(FloatCopies, Features, M);

    /// <summary>
    /// The fp32 weight copies ([features, features], bell-shaped values), the input ([m, features]) and the output buffer,
    /// from one fixed seed, for every linear-layer benchmark.
    /// </summary>
    internal static (float[][] Weights, float[] Input, float[] Output) CreateFloatData(int copies, int features, int m)
    {
        Random random = new(42);
        float[][] weights = new float[copies][];
        for (int c = 0; c < copies; c++)
        {
            weights[c] = new float[features * features];
            for (int i = 0; i < weights[c].Length; i++)
            {
                weights[c][i] = (float)(random.NextDouble() + random.NextDouble() + random.NextDouble() - 1.5);
            }
        }

        float[] input = new float[m * features];
        for (int i = 0; i < input.Length; i++)
        {
            input[i] = (float)(random.NextDouble() - 0.5);
        }

        return (weights, input, new float[m * features]);
    }

    /// <summary>Copy <paramref name="copy"/> of the int8 weight: the fp32 copies quantized per output channel (each int8 copy its own memory).</summary>
    private QuantizedTensor QuantizeCopy(int copy) =>
        QuantizedTensor.Quantize(_floatWeights[copy % FloatCopies], [Features, Features], QuantizationScheme.Int8PerChannel());

    private OrtMatMul[] CreateOrtInteger(bool unsignedActivations)
    {
        CreateFloatWeightsAndInput();
        OrtMatMul[] sessions = new OrtMatMul[Int8Copies];
        for (int c = 0; c < Int8Copies; c++)
        {
            sessions[c] = OrtMatMul.Integer(QuantizeCopy(c).GetInt8Data().ToArray(), Features, Features, M, Threads, unsignedActivations);
        }

        return sessions;
    }

    /// <summary>
    /// Rows [first, end) of an fp32 <c>output = input weight^T</c> ([m, features] x [features, features]): each weight row
    /// is read once and dotted with every token while it is in cache.
    /// </summary>
    internal static void DotRows(float[] weight, float[] input, float[] output, int features, int m, int first, int end)
    {
        for (int n = first; n < end; n++)
        {
            ReadOnlySpan<float> row = weight.AsSpan(n * features, features);
            for (int t = 0; t < m; t++)
            {
                output[(t * features) + n] = TensorPrimitives.Dot(row, input.AsSpan(t * features, features));
            }
        }
    }
}
