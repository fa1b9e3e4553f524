namespace Quantization.Fuzz;

/// <summary>
/// The fuzz targets of the core library's readers: <c>.npy</c> (<see cref="NpyReader"/>), <c>.npz</c>
/// (<see cref="NpzReader"/>), safetensors files with their header (<see cref="SafeTensorsFile"/>) and the checkpoint
/// index JSON (<see cref="SafeTensorsCheckpoint"/>). Each reads the input as a whole file and then uses what it read,
/// so that a malformed file the reader accepted fails where it is used.
/// </summary>
internal static class ReaderTargets
{
    /// <summary>
    /// The shards that index inputs may name, written once into the scratch directory: two tensors in the first, one in
    /// the second. A method, not a static field: instrumented library code must not run before the fuzzer's shared
    /// memory is set up.
    /// </summary>
    /// <returns>Each shard's file name and tensors.</returns>
    public static (string File, SafeTensorDescriptor[] Tensors)[] Shards() =>
    [
        (SafeTensorsCheckpoint.ShardFileName(0, 2), [new("a", SafeTensorDataType.Float32, [2]), new("b", SafeTensorDataType.Int8, [3])]),
        (SafeTensorsCheckpoint.ShardFileName(1, 2), [new("c", SafeTensorDataType.Float16, [2, 1])]),
    ];

    private static readonly Lazy<string> ShardDirectory = new(WriteShards);

    /// <summary>Gets the targets by name.</summary>
    public static IReadOnlyDictionary<string, FuzzTarget> All { get; } = new Dictionary<string, FuzzTarget>(StringComparer.Ordinal)
    {
        ["npy"] = Npy,
        ["npz"] = Npz,
        ["safetensors"] = SafeTensors,
        ["index"] = CheckpointIndex,
    };

    /// <summary>Parses a <c>.npy</c> file keeping its dtype, then converts it to float32.</summary>
    /// <param name="input">The file's bytes.</param>
    public static void Npy(byte[] input) =>
        // The data is copied, reordered from Fortran order and widened to float32 (bool and int8 grow 4 times).
        FuzzScratch.Run("npy", input, 16, () => NpyReader.Parse(input));

    /// <summary>Reads a <c>.npz</c> archive and converts each array to float32.</summary>
    /// <param name="input">The archive's bytes.</param>
    public static void Npz(byte[] input) =>
        // A member may decompress to 1032 times its size (DEFLATE's limit, which the reader enforces); it is then parsed and widened.
        FuzzScratch.Run("npz", input, 1032 * 8, () =>
        {
            using MemoryStream stream = new(input, writable: false);
            foreach (NumPyArray array in NpzReader.Read(stream).Values)
            {
                _ = array.ToSingleArray();
            }
        });

    /// <summary>Opens a safetensors file (checking its header), then reads every tensor's bytes, and float tensors as float32.</summary>
    /// <param name="input">The file's bytes.</param>
    public static void SafeTensors(byte[] input)
    {
        string path = FuzzScratch.NewPath(".safetensors");
        File.WriteAllBytes(path, input);
        try
        {
            // The header is copied and parsed (names become UTF-16 strings); F16 and BF16 tensors double as float32.
            FuzzScratch.Run("safetensors", input, 16, () =>
            {
                using SafeTensorsFile file = SafeTensorsFile.Open(path);
                _ = file.Metadata.Count;
                foreach (SafeTensorInfo tensor in file.Tensors)
                {
                    _ = file.GetBytes(tensor.Name);
                    if (tensor.DataType is SafeTensorDataType.Float16 or SafeTensorDataType.BFloat16 or SafeTensorDataType.Float32 or SafeTensorDataType.Float64)
                    {
                        _ = file.ReadSingles(tensor.Name);
                    }
                }
            });
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// Opens a sharded checkpoint through an index JSON placed next to the shards of <see cref="Shards"/>, then finds
    /// every tensor's file. A shard the index names that cannot be opened (missing, or a name too long for the file system) is an <see cref="IOException"/>, as documented.
    /// </summary>
    /// <param name="input">The index's bytes.</param>
    public static void CheckpointIndex(byte[] input)
    {
        string path = Path.Combine(ShardDirectory.Value, Path.GetFileName(FuzzScratch.NewPath(".index.json")));
        File.WriteAllBytes(path, input);
        try
        {
            // The index is parsed as a JSON document (names become UTF-16 strings); the shards are opened and mapped.
            FuzzScratch.Run(
                "index",
                input,
                32,
                () =>
                {
                    using SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(path);
                    foreach ((SafeTensorsFile file, SafeTensorInfo tensor) in checkpoint.Tensors)
                    {
                        _ = checkpoint.FileOf(tensor.Name);
                        _ = file.GetBytes(tensor.Name);
                    }
                },
                typeof(IOException));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static string WriteShards()
    {
        string directory = Path.Combine(FuzzScratch.Directory, "checkpoint");
        Directory.CreateDirectory(directory);
        foreach ((string file, SafeTensorDescriptor[] tensors) in Shards())
        {
            using SafeTensorsWriter writer = SafeTensorsWriter.Create(Path.Combine(directory, file), tensors);
            writer.Write(new byte[writer.DataLength]);
            writer.Commit();
        }

        return directory;
    }
}
