using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// The 4-bit linear layer (Int4, symmetric, groups of 32 along K), K = N = 4096, one thread: W4A16 and W4A8 against the
/// fp32 <see cref="System.Numerics.Tensors.TensorPrimitives"/> GEMV/GEMM of <see cref="LinearBenchmarks"/> (the baseline)
/// and ONNX Runtime's <c>com.microsoft.MatMulNBits</c> (bits 4, block 32, the same codes and scales) at accuracy level 1
/// (fp32 arithmetic) and 4 (activations quantized to int8 per block) in the same run.
/// </summary>
/// <remarks>
/// Every method rotates over copies of its weight larger than the caches in all (eight 4-bit copies of 10 MiB with their
/// scales, two fp32 copies of 64 MiB), as decoding reads each layer's weight from memory. ONNX Runtime's sessions read
/// and write the same activation and output buffers as the layer.
/// </remarks>
[Config(typeof(KernelBenchmarkConfig))]
public class W4LinearBenchmarks : IDisposable
{
    private const int Features = 4096;
    private const int GroupSize = 32;
    private const int Int4Copies = 8;
    private const int FloatCopies = 2;

    private float[][] _floatWeights = [];
    private QuantizedLinear[] _layers = [];
    private OrtMatMul[] _ortLevel1 = [];
    private OrtMatMul[] _ortLevel4 = [];
    private float[] _input = [];
    private float[] _output = [];
    private int _next;

    /// <summary>Gets or sets the number of tokens: 1 is a GEMV.</summary>
    [Params(1, 64)]
    public int M { get; set; }

    [GlobalSetup(Target = nameof(Fp32TensorPrimitives))]
    public void SetupFloat() => CreateFloatWeightsAndInput();

    [GlobalSetup(Targets = [nameof(W4A16), nameof(W4A8)])]
    public void SetupLayers()
    {
        CreateFloatWeightsAndInput();
        _layers = new QuantizedLinear[Int4Copies];
        for (int c = 0; c < Int4Copies; c++)
        {
            _layers[c] = new QuantizedLinear(QuantizeCopy(c));
        }
    }

    [GlobalSetup(Target = nameof(OrtMatMulNBitsLevel1))]
    public void SetupOrtLevel1() => _ortLevel1 = CreateOrt(accuracyLevel: 1);

    [GlobalSetup(Target = nameof(OrtMatMulNBitsLevel4))]
    public void SetupOrtLevel4() => _ortLevel4 = CreateOrt(accuracyLevel: 4);

    [GlobalCleanup]
    public void Dispose()
    {
        foreach (OrtMatMul session in _ortLevel1.Concat(_ortLevel4))
        {
            session.Dispose();
        }

        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true)]
    public void Fp32TensorPrimitives() => LinearBenchmarks.DotRows(_floatWeights[Next(FloatCopies)], _input, _output, Features, M, 0, Features);

    [Benchmark]
    public void W4A16() => _layers[Next(Int4Copies)].Forward(_input, _output, M, QuantizedLinearMode.W4A16);

    [Benchmark]
    public void W4A8() => _layers[Next(Int4Copies)].Forward(_input, _output, M, QuantizedLinearMode.W4A8);

    [Benchmark]
    public void OrtMatMulNBitsLevel1() => _ortLevel1[Next(Int4Copies)].Run();

    [Benchmark]
    public void OrtMatMulNBitsLevel4() => _ortLevel4[Next(Int4Copies)].Run();

    private int Next(int copies) => _next++ % copies;

    private void CreateFloatWeightsAndInput() => (_floatWeights, _input, _output) = LinearBenchmarks.CreateFloatData(FloatCopies, Features, M);

    /// <summary>Copy <paramref name="copy"/> of the 4-bit weight (each copy its own memory).</summary>
    private QuantizedTensor QuantizeCopy(int copy) =>
        QuantizedTensor.Quantize(_floatWeights[copy % FloatCopies], [Features, Features], QuantizationScheme.Int4PerGroup(GroupSize));

    /// <summary>Creates the sessions, and checks on the first that ONNX Runtime computes what W4A16 computes (to its arithmetic's error).</summary>
    private OrtMatMul[] CreateOrt(int accuracyLevel)
    {
        CreateFloatWeightsAndInput();
        OrtMatMul[] sessions = new OrtMatMul[Int4Copies];
        for (int c = 0; c < Int4Copies; c++)
        {
            sessions[c] = OrtMatMul.MatMulNBits(QuantizeCopy(c), accuracyLevel, _input, _output, M, threads: 1);
        }

        sessions[0].Run();
        float[] ort = [.. _output];
        new QuantizedLinear(QuantizeCopy(0)).Forward(_input, _output, M, QuantizedLinearMode.W4A16);
        double error = 0, norm = 0;
        for (int i = 0; i < ort.Length; i++)
        {
            error += (ort[i] - _output[i]) * (double)(ort[i] - _output[i]);
            norm += (double)_output[i] * _output[i];
        }

        if (error > 1e-3 * norm)
        {
            throw new InvalidOperationException($"MatMulNBits (accuracy level {accuracyLevel}) differs from the layer: relative squared error {error / norm:G3}.");
        }

        return sessions;
    }
}
